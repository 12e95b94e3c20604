"""`python -m tests.jvm_vectors OUT_DIR [--bundle DIR]`: write the JVM module's shared test vectors."""

import sys

from .write import main

sys.exit(main())
