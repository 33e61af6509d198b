import sys

from vidgen.demo.run import main

sys.exit(main())
