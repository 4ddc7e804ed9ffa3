#!/bin/sh
# mpiexec's launcher for remote hosts: runs the real launcher and names the host when its
# processes die under it mid-job (mpiexec itself only reports that a proxy's socket closed).
#
#   hostexec.sh [-x] HOST COMMAND...   (the arguments mpiexec gives an ssh or rsh launcher)
#
# The real launcher is $STREAMTRAIN_LAUNCHER_EXEC (default: ssh, or rsh when mpiexec passed no
# ssh option). A host counts as lost when the launcher dies of a signal or exits 255 (ssh's code
# for a dropped connection or a remote command killed by a signal) without having been told to stop.
launcher="${STREAMTRAIN_LAUNCHER_EXEC:-}"
host=""
for arg in "$@"; do
  case "$arg" in -*) ;; *) host="$arg"; break ;; esac
done
if [ -z "$launcher" ]; then
  case "$1" in -*) launcher=ssh ;; *) launcher=rsh ;; esac
fi

# mpiexec's own stderr, held from the start: mpiexec stops forwarding this script's output as soon
# as it sees the proxy's socket close, and may have exited before the line below is written.
exec 3>"/proc/$PPID/fd/2" 2>/dev/null || exec 3>&2

"$launcher" "$@" 3>&- &
child=$!
stopping=0
trap 'stopping=1; kill -TERM "$child" 2>/dev/null' TERM INT HUP
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break  # an interrupted wait returns early: wait again
done

if [ "$stopping" = 0 ] && { [ "$status" -gt 128 ] || [ "$status" = 255 ]; }; then
  printf '[streamtrain] error: host %s lost: its processes ended under %s with status %s\n' \
    "$host" "$(basename "$launcher")" "$status" >&3
fi
exit "$status"
