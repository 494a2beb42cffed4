"""A real one-node SLURM cluster for the integration tests, started by hand (no systemd).

Everything it writes lives in one folder (config, state, spool, logs, pid files). Clients find it
through SLURM_CONF, except the `srun` that snakemake's SLURM jobstep executor runs inside each
job: that one strips every SLURM_* variable, so the config is also linked at SLURM's default path
/etc/slurm/slurm.conf (only if nothing is there; the link is removed at the end). munged is started
only if none answers. Everything started is stopped by pid. Callers start this only when the user
opted in (MIQD_TEST_SLURM=1), which also allows installing the Debian packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client"]
DAEMONS = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo"]


class Unavailable(Exception):
    """SLURM cannot run here; the message says why (the tests skip with it)."""


def _run(cmd: list[str], timeout: int = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def ensure_installed(allow_install: bool) -> None:
    missing = [d for d in DAEMONS if _which(d) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise Unavailable(f"SLURM is not installed ({', '.join(missing)} missing) and this is not root")
    if not allow_install:
        raise Unavailable(
            f"SLURM is not installed ({', '.join(missing)} missing); set MIQD_TEST_SLURM=1 to let the "
            f"tests apt-get install {' '.join(PACKAGES)} (.ci/run does)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = _run(cmd, timeout=600, env=env)
        if proc.returncode != 0:
            raise Unavailable(f"could not install SLURM ({' '.join(cmd)}): {proc.stderr.strip()[-400:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLUSTER_NAME = "miqdtest"


def _stale_link(path: Path) -> bool:
    """A link to one of our test clusters' configs whose slurmctld no longer runs."""
    if not path.is_symlink():
        return False
    folder = Path(os.readlink(path)).parent
    if not (folder / "slurm.conf").is_file():
        return str(folder).startswith(tempfile.gettempdir())  # its session's temporary folder is gone
    if f"ClusterName={CLUSTER_NAME}" not in (folder / "slurm.conf").read_text():
        return False
    try:
        os.kill(int((folder / "slurmctld.pid").read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return True
    return False


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._pid_files: list[Path] = []
        self._links: list[Path] = []
        self.node = socket.gethostname().split(".")[0]

    # -- configuration ---------------------------------------------------------------------------

    def write_config(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.9)
        self.conf.write_text(
            f"""ClusterName={CLUSTER_NAME}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
DefMemPerCPU=1000
MinJobAge=3600
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerParameters=batch_sched_delay=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        # a fake GPU: a GRES with no device file is dropped and drains the node; /dev/null works
        (self.root / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File=/dev/null\n")

    def _link_default_config(self) -> None:
        etc = Path("/etc/slurm")
        for name in ("slurm.conf", "gres.conf"):
            target = etc / name
            if _stale_link(target):  # left by a test session that was killed before its teardown
                target.unlink()
            elif target.exists() or target.is_symlink():
                raise Unavailable(f"{target} exists (a real SLURM install, or a test cluster that is "
                                  f"still running?); the test will not touch it")
        etc.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            (etc / name).symlink_to(self.root / name)
            self._links.append(etc / name)

    # -- daemons ---------------------------------------------------------------------------------

    def _munge_answers(self) -> bool:
        munge, unmunge = _which("munge"), _which("unmunge")
        if not (munge and unmunge):
            return False
        cred = _run([munge, "-n"], timeout=10)
        return cred.returncode == 0 and _run([unmunge], timeout=10, input=cred.stdout).returncode == 0

    def _start_munge(self) -> None:
        if self._munge_answers():
            return
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            _run(["runuser", "-u", "munge", "--", _which("mungekey") or "mungekey", "--create"])
        proc = _run(["runuser", "-u", "munge", "--", _which("munged")])
        if proc.returncode != 0:
            raise Unavailable(f"munged did not start: {proc.stderr.strip()}")
        self._pid_files.append(run_dir / "munged.pid")
        for _ in range(50):
            if self._munge_answers():
                return
            time.sleep(0.1)
        raise Unavailable("munged started but does not answer")

    def start(self) -> None:
        if os.geteuid() != 0:
            raise Unavailable("starting slurmctld and slurmd needs root")
        self.write_config()
        self._link_default_config()
        self._start_munge()
        for daemon, pid in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            proc = _run([_which(daemon), "-f", str(self.conf)], env=self.env)
            if proc.returncode != 0:
                raise Unavailable(f"{daemon} did not start: {proc.stderr.strip()} (log in {self.root}/log)")
            self._pid_files.append(self.root / pid)
        deadline = time.time() + 60
        state = ""
        while time.time() < deadline:
            state = _run([_which("sinfo"), "-h", "-N", "-o", "%T"], env=self.env).stdout.strip()
            if state.startswith("idle"):
                return
            time.sleep(0.5)
        raise Unavailable(f"the SLURM node did not become idle (state {state!r}); see {self.root}/log")

    def stop(self) -> None:
        for pid_file in reversed(self._pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self._pid_files.clear()
        for link in self._links:
            link.unlink(missing_ok=True)
        self._links.clear()

    # -- queries ---------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (records stay for MinJobAge = 1 h after the end)."""
        out = _run([_which("scontrol"), "show", "job", "-o", job_id], env=self.env).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
