# Sourced first by every cluster script (`source "$(dirname "$0")/signals.sh"`), before anything else.
# A parent may start us with SIGINT and SIGTERM blocked (Foundation's Process does, so `swift test`
# does): then neither our traps nor `kill` of our own children would work. Start the script again,
# once, with an empty signal mask and default dispositions ($0 and "$@" are the script's own).
if [ -z "${SWITCHYARD_CLUSTER_SIGNALS:-}" ] &&
    (( 0x$(awk '/^SigBlk/ { print $2 }' /proc/$$/status) & 0x4002 )); then
    export SWITCHYARD_CLUSTER_SIGNALS=reset
    exec /usr/bin/python3 -c 'import os, signal, sys
for number in (signal.SIGINT, signal.SIGTERM): signal.signal(number, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, [])
os.execv("/bin/bash", ["bash"] + sys.argv[1:])' "$0" "$@"
fi
