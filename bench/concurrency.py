"""Phase 5, concurrency: 8 gradio_client clients at once against one client in a row."""

from __future__ import annotations

import threading

from bench.common import BUNDLED, Report, fmt_s, med, now
from bench.start import client


def phase_concurrency(rep: Report, ctx: dict, rounds: int, n: int = 8) -> None:
    app = ctx["app"]
    clients = [client(app.url) for _ in range(n)]
    for c in clients:  # each client's first call (connection set-up) is not counted
        c.predict(api_name="/stats")
    order = ["seq", "conc", "conc", "seq"] * ((rounds + 1) // 2) if rounds > 1 else ["seq", "conc"]
    order = order[: max(2, 2 * rounds)]
    batches = []
    for mode in order:
        prompts = [next(ctx["variants"]) for _ in range(n)]
        results: list = [None] * n
        latencies: list = [None] * n
        calls0 = app.stats()["forward_calls"]
        if mode == "seq":
            t = now()
            for i, p in enumerate(prompts):
                t1 = now()
                try:
                    results[i] = clients[0].predict(p, BUNDLED, api_name="/analyze")
                except Exception as exc:
                    results[i] = exc
                latencies[i] = now() - t1
            wall = now() - t
        else:
            barrier = threading.Barrier(n + 1)

            def worker(i):
                barrier.wait()
                t1 = now()
                try:
                    results[i] = clients[i].predict(prompts[i], BUNDLED, api_name="/analyze")
                except Exception as exc:
                    results[i] = exc
                latencies[i] = now() - t1

            threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
            for th in threads:
                th.start()
            barrier.wait()
            t = now()
            for th in threads:
                th.join(timeout=600)
            wall = now() - t
        answered = sum(isinstance(r, dict) and r.get("prompt") == p for r, p in zip(results, prompts))
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, Exception)]
        batches.append({"mode": mode, "wall_s": wall, "throughput_rps": n / wall, "answered": answered,
                        "latencies_s": latencies, "errors": errors[:3],
                        "forward_calls": app.stats()["forward_calls"] - calls0})
    rep.raw["concurrency.batches"] = batches
    seq = med(b["throughput_rps"] for b in batches if b["mode"] == "seq")
    conc = med(b["throughput_rps"] for b in batches if b["mode"] == "conc")
    conc_batches = [b for b in batches if b["mode"] == "conc"]
    all_answered = all(b["answered"] == n for b in batches)
    rep.check("5 concurrency", f"{n} clients at once: every request answered",
              f"{sum(b['answered'] for b in conc_batches)}/{n * len(conc_batches)}",
              "all answered" if all_answered else f"errors: {[b['errors'] for b in batches if b['errors']]}",
              all_answered)
    rep.check("5 concurrency", f"{n} clients at once: throughput >= 1 client sequential",
              f"{conc:.2f} req/s", f"{conc / seq:.2f}x sequential ({seq:.2f} req/s); "
              f"p50 latency {fmt_s(med(x for b in conc_batches for x in b['latencies_s']))}", conc >= seq)
