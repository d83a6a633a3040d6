# Sourced by the device scripts: groundrt importable without installing it, on a machine that
# has its dependencies but not groundrt. The package-dir layout of pyproject.toml as symlinks in
# a scratch folder put first on PYTHONPATH (run Python with -P so the source tree stays off it).
GROUNDRT_SHIM=$(mktemp -d)
mkdir "$GROUNDRT_SHIM/groundrt"
for entry in groundrt/*; do ln -s "$PWD/$entry" "$GROUNDRT_SHIM/groundrt/"; done
for part in export runtime kernels; do ln -s "$PWD/$part" "$GROUNDRT_SHIM/groundrt/$part"; done
export PYTHONPATH="$GROUNDRT_SHIM${PYTHONPATH:+:$PYTHONPATH}"
