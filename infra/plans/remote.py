"""Shell fragments every remote script shares (pure strings, POSIX sh, so bash and sh scripts both use them).

A fresh server runs cloud-init for minutes after sshd answers: `package_update`/`package_upgrade`
hold apt's lists lock (which `DPkg::Lock::Timeout` does not cover: it waits for the dpkg lock only)
and its `runcmd` enables and restarts services. Any script that touches packages, services or the
files cloud-init writes therefore starts with `wait_for_cloud_init`.
"""

from __future__ import annotations

CLOUD_INIT_TIMEOUT_S = 1200
CLOUD_INIT_WAIT_MARKER = "cloud-init status --wait"


def wait_for_cloud_init(timeout_s: int = CLOUD_INIT_TIMEOUT_S) -> str:
    """Block until cloud-init is done (bounded by `timeout_s` seconds); exit 1 with a message if it
    failed or did not finish.

    `cloud-init status --wait` never returns on a host cloud-init does not manage ("not run",
    "disabled": adopted servers), so it only waits when cloud-init is running or done; exit 2 is
    "done with recoverable errors" (cloud-init >= 23.4), which is not fatal.
    """
    return f"""if command -v cloud-init >/dev/null 2>&1; then
  cloud_init_log=/var/log/cloud-init-output.log
  cloud_init_state=$(cloud-init status 2>/dev/null || true)
  case "$cloud_init_state" in
    *"not run"*|*disabled*)
      echo "spaced: cloud-init does not manage this host; not waiting for it" >&2 ;;
    *)
      cloud_init_rc=0
      timeout {int(timeout_s)} {CLOUD_INIT_WAIT_MARKER} >/dev/null 2>&1 || cloud_init_rc=$?
      case "$cloud_init_rc" in
        0) ;;
        2) echo "spaced: cloud-init finished with recoverable errors; continuing" >&2 ;;
        124) echo "spaced: cloud-init did not finish within {int(timeout_s)} s; see $cloud_init_log" >&2
             exit 1 ;;
        *) echo "spaced: cloud-init failed (exit $cloud_init_rc); see $cloud_init_log" >&2
           exit 1 ;;
      esac ;;
  esac
fi
"""
