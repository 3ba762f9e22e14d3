"""The test suite as a package: pytest puts the repository root on sys.path for it, so `nerkit`, `bench` and `tests.helpers` import from this checkout whatever the directory pytest starts in."""
