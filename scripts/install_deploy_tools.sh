#!/usr/bin/env bash
# Debian's HAProxy (the L7 gateway, with Lua and JWT) and Prometheus, for the deployment tests
# and `sonic gateway`; iproute2 and nftables, for the network-fault tests (a network namespace
# whose packets to the server are dropped); kubectl, which renders the manifests (kustomize);
# openssl, which makes the TLS tests' certificates.  The packages' own services are not
# started: the tests and the command run their own instances with their own configuration.
set -euo pipefail
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v prometheus >/dev/null || need+=(prometheus)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v kubectl >/dev/null || need+=(kubectl)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
# policy-rc.d 101: do not start the daemons while installing.
$SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
($SUDO apt-get install -y -qq "${need[@]}" >/dev/null) \
  || ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null)
haproxy -v | sed -n 1p        # sed reads all: head would SIGPIPE haproxy under pipefail
prometheus --version 2>&1 | sed -n 1p
