#!/usr/bin/env bash
# make peers: one peer's own venv (e.g. var/peers/infinity), pinned by loadtests/peer_requirements/<peer>.txt.
# CPU torch goes in first (from the local wheel cache or TORCH_INDEX_URL), so that the peer's
# dependencies never pull a multi-GB CUDA build. Without the package index it says so and leaves
# no half-made venv behind: `labelwise bench` then runs without this peer, or with the one installed
# before (kept, never removed unless this run starts to replace it).
set -uo pipefail
peer="${1:?usage: make_peer_venv.sh PEER VENV_DIR}"
venv="${2:?usage: make_peer_venv.sh PEER VENV_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
pins="$here/$peer.txt"
python="${PYTHON:-python3}"
torch_version="${TORCH_VERSION:-2.13.0}"
case "$peer" in
  infinity) spec="infinity-emb[server,optimum]==0.0.78" ;;
  *) echo "make peers: unknown peer '$peer' (known: infinity)" >&2; exit 2 ;;
esac
[ -f "$pins" ] || { echo "make peers: missing pin file $pins" >&2; exit 2; }
if [ -f "$venv/.installed" ] && [ "$venv/.installed" -nt "$pins" ]; then
  echo "[peers] $peer: already installed in $venv"; exit 0
fi

creating=0  # 1 once this run has removed the venv to make it anew: only then is a half-made one ours
fail() {
  echo "make peers: could not install $spec into $venv: $1." >&2
  local index="${PIP_INDEX_URL:-the configured index}"
  echo "make peers: the package index ($index) is needed once; pip said: ${2:-see above}" >&2
  echo "make peers: \`labelwise bench\` runs without the $peer peer until \`make peers\` succeeds." >&2
  [ "$creating" = 1 ] && rm -rf "$venv"
  exit 1
}
last_line() { grep -v '^\s*$' "$1" | grep -iv 'is ignored' | tail -n 1; }

# A cheap probe first: reaching the index for the peer's own wheel says whether the rest can work.
probe="$(mktemp -d)"; log="$probe/pip.log"
trap 'rm -rf "$probe"' EXIT
echo "[peers] $peer: checking that the package index serves $spec"
if ! "$python" -m pip download -q --no-deps --dest "$probe" "${spec%%[*}==${spec##*==}" >"$log" 2>&1; then
  if [ -f "$venv/.installed" ]; then
    # $pins changed since that install, and the index cannot serve the new pins: keep what works.
    echo "make peers: could not update the $peer peer in $venv to $pins: the package index did not serve" \
      "$spec (pip said: $(last_line "$log"))." >&2
    echo "make peers: the $peer peer is used as installed, stale against $pins; rerun \`make peers\` with" \
      "the index to update it." >&2
    exit 0
  fi
  fail "the package index did not serve it" "$(last_line "$log")"
fi
creating=1
rm -rf "$venv"
"$python" -m venv "$venv" || fail "python -m venv failed"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip >"$log" 2>&1 || fail "upgrading pip failed" "$(last_line "$log")"
echo "[peers] $peer: CPU torch $torch_version first"
# The +cpu build from PyTorch's CPU index (or a wheel folder pip is configured with): PyPI's Linux torch
# is the CUDA build, ~3 GB of nvidia wheels the bench's CPU peer never uses.
"${pip[@]}" install -q --retries 1 "torch==$torch_version+cpu" --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" \
  ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} >"$log" 2>&1 \
  || fail "torch==$torch_version+cpu did not install" "$(last_line "$log")"
echo "[peers] $peer: $spec (pinned by $pins)"
"${pip[@]}" install -q -c "$pins" "$spec" >"$log" 2>&1 || fail "pip install failed" "$(last_line "$log")"
"$venv/bin/python" -c "import infinity_emb, optimum.onnxruntime, torch" >"$log" 2>&1 \
  || fail "the installed peer does not import" "$(last_line "$log")"
touch "$venv/.installed"
echo "[peers] $peer: done, $(du -sh "$venv" | cut -f1) in $venv"
