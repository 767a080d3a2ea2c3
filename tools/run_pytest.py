"Run pytest over tests/ and fail when it collects nothing (pytest's exit 5)."
import sys, subprocess
rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "tests"] + sys.argv[1:])
if rc == 5:
    print("pytest collected no tests: failing (an empty test run is not a pass)")
    sys.exit(1)
sys.exit(rc)
