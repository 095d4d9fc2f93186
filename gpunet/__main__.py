"""``python -m gpunet``: the same command line as ``gpunet``."""

from .cli import main

raise SystemExit(main())
