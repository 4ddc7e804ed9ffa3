"""``python -m trainer`` is the ``streamtrain`` command line."""
from trainer.cli import main

raise SystemExit(main())
