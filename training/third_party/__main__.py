"""`python -m training.third_party`: see training/third_party/build.py."""
from training.third_party.build import main

if __name__ == "__main__":
    raise SystemExit(main())
