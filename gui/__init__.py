"""The BodyMap desktop application (PySide6): a thin layer over the bodymap library.

Start it with `bodymap-gui [SCAN | ANALYSIS_FOLDER | PROJECT]` (gui.app:main)."""
import sys

# torch imports triton when it is installed (torch._dynamo probes for it). triton carries its own
# LLVM, which crashes the process when Mesa's software OpenGL (llvmpipe: Xvfb, VMs, remote
# desktops) has already loaded another LLVM for the 3D view. The GUI runs torch on the CPU only
# and never needs triton, so it is hidden: `import triton` then fails cleanly and torch goes on.
if "triton" not in sys.modules:
    sys.modules["triton"] = None
