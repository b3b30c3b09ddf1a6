"""The views: what a person sees, drawn from an Analysis without the model. A View (view)
says which measure, layer, head and BOS mode; the rest turns numbers into SVG and HTML."""
