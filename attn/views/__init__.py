"""The views: what a person sees, drawn from an Analysis without the model.

- what to draw: view (the View and its one validation, the numbers a view reads), words
  (pieces merged into words), labels and palette (text and colours every view shares);
- the line diagram (matplotlib): layout (columns, font size, legibility) and drawing (the
  Diagram artist, SVG and PNG) both measure text with fonts; diagram puts them together
  (the lab's figure and its <img>);
- two prompts: alignment, compare_diagram (the figure), compare_difference (HTML);
- HTML, no matplotlib: highlight, heatmap, summary, ablation_bars;
- export (the files of a view) and view_cache (drawn views, the next ones drawn ahead).
"""
