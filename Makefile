# BodyMap: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# System packages: open3d (libusb), Qt under Xvfb (xcb), offscreen VTK (EGL).
APT_PKGS := libusb-1.0-0 xvfb xauth libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 \
	libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 \
	libegl1 libegl-mesa0 libgl1 libglib2.0-0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup venv demo test samples bench clean gui-screenshots

setup:  ## install missing system packages with apt
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(STAMP)

# torch first and pinned: pip takes this exact build from the machine's disk. Then the bytecode of
# every installed module, on both cores: where PYTHONDONTWRITEBYTECODE is set (many containers,
# these machines) Python never writes what it compiles on import, so without it every BodyMap
# process compiled torch's and anny's imports again: 10-13 s of start-up against 4.3-4.6 s
# (docs/benchmarks.md). (compileall exits non-zero on a package's deliberately broken test files.)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile --upgrade pip
	$(BIN)/pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-compile -e '.[dev]'
	$(BIN)/python -m compileall -q -q -j 0 $(VENV)/lib/python3*/site-packages || true
	touch $(STAMP)

demo: setup venv  ## run what the pipeline has so far on a bundled sample; outputs under out/
	bash scripts/demo.sh

test: setup venv
	$(BIN)/python -m pytest -q -n 2

samples: venv  ## regenerate sample_meshes/ (deterministic)
	bash scripts/make_samples.sh

bench: venv  ## every benchmark (tens of minutes); figures go to docs/benchmarks.md by hand
	$(BIN)/python benchmarks/synth.py
	$(BIN)/python benchmarks/anatomy.py
	$(BIN)/python benchmarks/detection.py
	$(BIN)/python benchmarks/gui.py

gui-screenshots: setup venv  ## the desktop application on a sample comparison -> docs/images/gui_*.png (own Xvfb)
	$(BIN)/python scripts/gui_screenshots.py

clean:
	rm -rf out .pytest_cache
