#!/bin/sh
# What one node of docker/compose.yaml runs (all nodes use the same image):
#
#   node.sh init            once: the ssh key every node shares, then `airflow db migrate`
#   node.sh mpi-host        an MPI host: sshd in the foreground (mpiexec starts ranks over ssh)
#   node.sh COMPONENT ...   an Airflow component: `airflow COMPONENT ...`
#
# /root/.ssh is a volume shared by the scheduler (where LocalExecutor runs mpiexec) and the MPI
# hosts: one key pair, its public half authorized, and the client settings of docs/cluster.md.
set -eu
ssh_dir=/root/.ssh

case "${1:-}" in
  init)
    mkdir -p "$ssh_dir" && chmod 700 "$ssh_dir"
    [ -f "$ssh_dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$ssh_dir/id_ed25519"
    cp "$ssh_dir/id_ed25519.pub" "$ssh_dir/authorized_keys"
    printf '%s\n' "Host *" "  BatchMode yes" "  StrictHostKeyChecking accept-new" \
      "  ServerAliveInterval 5" "  ServerAliveCountMax 3" >"$ssh_dir/config"
    chmod 600 "$ssh_dir/authorized_keys" "$ssh_dir/config"
    exec airflow db migrate
    ;;
  mpi-host)
    ssh-keygen -A  # this container's own host keys (the image has none)
    mkdir -p /run/sshd
    # mpiexec names the venv's hydra_pmi_proxy and python by absolute path and passes its
    # environment on to the ranks, so the ssh session needs nothing of the image's ENV
    exec /usr/sbin/sshd -D -e
    ;;
  "")
    echo "node.sh: give a role: init, mpi-host or an airflow component" >&2
    exit 2
    ;;
  *)
    exec airflow "$@"
    ;;
esac
