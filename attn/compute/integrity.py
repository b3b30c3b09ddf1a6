"""The checks that attention weights are attention weights, before anything is shown.

Softmax rows sum to 1; nothing attends to a later token; a local layer sees only its last
`sliding_window` tokens. An analysis checks every row of its pass (`check_integrity`); a
generation checks the one predicting row it kept per step (`check_rows`). Any breach
raises IntegrityError: the numbers are not attention weights, so none are shown.
"""

from __future__ import annotations

from attn.errors import IntegrityError

ROW_SUM_TOL = {"float32": 1e-4, "float64": 1e-8, "bfloat16": 2e-2, "float16": 1e-2}
CHECK_ROWS = 256  # query rows read at a time by the band checks


def row_tolerance(dtype: str) -> float:
    """How far from 1 a softmax row of this dtype may sum."""
    return ROW_SUM_TOL.get(dtype, 1e-3)


def check_integrity(attentions, layer_types, window, dtype: str) -> None:
    """Every layer's (1, heads, T, T) weights of one forward pass."""
    import torch

    if len(attentions) != len(layer_types):
        raise IntegrityError(
            f"Expected attention for {len(layer_types)} layers, got {len(attentions)}."
        )
    tol = row_tolerance(dtype)
    # One host sync for all layers (on a GPU a sync per check costs more than the checks),
    # and each weight read about once: at 2048 tokens these checks cost more than
    # half the forward pass when written as full-matrix triu/tril/isfinite copies.
    checks = []
    for att, kind in zip(attentions, layer_types):
        a = att[0]
        sums = a.sum(dim=-1, dtype=torch.float32)  # NaN or infinity anywhere shows in its row's sum
        future, beyond = _outside_band(a, window if kind == "local" else None)
        checks.append(torch.stack([
            (~torch.isfinite(sums)).any().float(),
            (sums - 1).abs().max(),
            future.float(),
            beyond.float(),
        ]))
    for layer, (nonfinite, err, future, outside) in enumerate(torch.stack(checks).tolist()):
        if nonfinite:
            raise IntegrityError(f"Layer {layer}: attention contains NaN or infinity.")
        if not err <= tol:
            raise IntegrityError(f"Layer {layer}: attention rows sum to 1 ± {err:.2e} (tolerance {tol}).")
        if future:
            raise IntegrityError(f"Layer {layer}: a token attends to a later token (causal mask broken).")
        if outside:
            raise IntegrityError(
                f"Layer {layer}: a local layer attends beyond its {window}-token window."
            )


def _outside_band(a, window: int | None):
    """(any weight on a later token, any weight `window` or more tokens back), reading
    only the cells that must be zero, a block of query rows at a time."""
    import torch

    n = a.shape[-1]
    future, beyond = [a.new_zeros((), dtype=torch.bool)], [a.new_zeros((), dtype=torch.bool)]
    for r0 in range(0, n, CHECK_ROWS):
        r1 = min(r0 + CHECK_ROWS, n)
        # Row i, key j > i; in this block, column c = j - (r0 + 1), so the cells with c >= i - r0.
        future.append(torch.triu(a[:, r0:r1, r0 + 1:]).any())
        if window and r1 - 1 >= window:
            lo = max(r0, window)
            # Row i, key j <= i - window: in this block, j - (i - lo) <= lo - window.
            beyond.append(torch.tril(a[:, lo:r1, : r1 - window], diagonal=lo - window).any())
    return torch.stack(future).any(), torch.stack(beyond).any()


def check_rows(attention, n_prompt: int, keys_seen: dict[int, list[int]], missing: set[int],
               layer_types, window, dtype: str) -> None:
    """A generation's rows, (steps, layers, heads, width): step k's row is a softmax row
    over exactly its n_prompt + k keys (`keys_seen[layer][k]`: how many each layer
    returned; `missing`: layers that returned no weights); global layers saw every key,
    local ones none beyond their window."""
    import torch

    if missing:
        raise IntegrityError(f"Layer {min(missing)}: no attention weights came back during generation.")
    for layer, lengths in sorted(keys_seen.items()):
        for k, keys in enumerate(lengths):
            if keys > n_prompt + k or (layer_types[layer] == "global" and keys != n_prompt + k):
                raise IntegrityError(
                    f"Layer {layer}, step {k}: attention over {keys} keys, expected {n_prompt + k}."
                )
    steps, _, _, width = attention.shape
    sums = attention.sum(dim=-1)  # (steps, L, H); NaN or infinity anywhere shows here
    checks = [(~torch.isfinite(sums)).any().float(), (sums - 1).abs().max()]
    local = [i for i, t in enumerate(layer_types) if t == "local"]
    if window and local:
        # Step k's query sits at position n_prompt + k - 1: keys j <= that - window are out of sight.
        j = torch.arange(width, device=attention.device)
        q = n_prompt - 1 + torch.arange(steps, device=attention.device)
        beyond = j[None, :] <= (q[:, None] - window)  # (steps, width)
        checks.append((attention[:, local] * beyond[:, None, None, :]).abs().amax())
    values = torch.stack(checks).tolist()
    nonfinite, err = values[0], values[1]
    if nonfinite:
        raise IntegrityError("Generation: attention contains NaN or infinity.")
    tol = row_tolerance(dtype)
    if not err <= tol:
        raise IntegrityError(f"Generation: attention rows sum to 1 ± {err:.2e} (tolerance {tol}).")
    if len(values) > 2 and values[2] > 0:
        raise IntegrityError(f"Generation: a local layer attends beyond its {window}-token window.")
