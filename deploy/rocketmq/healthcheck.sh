#!/usr/bin/env bash
# Health check for the name server and broker containers of
# docker-compose.yml that needs nothing but bash and coreutils (mqadmin
# would start a JVM with a 1 GiB heap on every check):
#
#   healthcheck.sh namesrv   healthy when the name server answers GET_BROKER_CLUSTER_INFO
#   healthcheck.sh broker    healthy when the broker's port accepts connections and the
#                            name server lists the broker (it has registered)
#
# NAMESRV (default 127.0.0.1:9876), BROKER_PORT (10911) and BROKER_NAME
# (broker-a) override the defaults.
set -u
namesrv=${NAMESRV:-127.0.0.1:9876}

# cluster_info prints the name server's answer to GET_BROKER_CLUSTER_INFO
# (request code 106): one frame, a 4-byte length (4 + header), a 4-byte
# header length (JSON serialization) and the JSON header.
cluster_info() {
  local header='{"code":106,"flag":0,"language":"JAVA","opaque":1,"version":401}'
  exec 3<>"/dev/tcp/${namesrv%:*}/${namesrv##*:}" || return 1
  printf '\0\0\0\x44\0\0\0\x40%s' "$header" >&3 || return 1
  timeout 3 cat <&3
}

case "${1:-}" in
  namesrv)
    cluster_info | grep -aq '"code":0' ;;
  broker)
    (exec 4<>"/dev/tcp/127.0.0.1/${BROKER_PORT:-10911}") 2>/dev/null &&
      cluster_info | grep -aq "\"brokerName\":\"${BROKER_NAME:-broker-a}\"" ;;
  *)
    echo "usage: healthcheck.sh namesrv|broker" >&2; exit 2 ;;
esac
