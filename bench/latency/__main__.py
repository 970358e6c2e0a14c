"""``python -m bench.latency`` (from the repository root) runs the benchmark."""

from bench.latency.run import main

raise SystemExit(main())
