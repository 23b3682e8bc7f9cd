"""The parts of benchmarks/device.py kept beside it: the shared helpers (`common`), the serving
engine (`serving`) and the other families' 7B shapes (`models`)."""
