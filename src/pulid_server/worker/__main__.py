import sys

from pulid_server.worker.loop import main

sys.exit(main())
