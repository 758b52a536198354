//! A sweep through a real Slurm: a single-node cluster on localhost (controller, node and its
//! own munged, all from a temporary directory), `scripts/slurm-sweep.sh` submitting a 3-task
//! array and the dependent merge, then a task cancelled mid-run and the sweep finished with
//! `--resume`. Skipped where Slurm is not installed, unless CI is set (.ci/run installs it).
mod common;
use common::*;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three groups (seeds) of two runs, a second or two each on one core: long enough to cancel
/// a task between its two runs.
fn sweep<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    wd_sweep("10000", extra)
}

/// A running single-node cluster; dropping it cancels every job, waits for an empty queue (jobs
/// outlive the daemons), shuts the daemons down and stops munged.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let installed = ["slurmctld", "slurmd", "sbatch", "munged"]
            .iter()
            .all(|t| which(t).is_some());
        let root = unsafe { libc::geteuid() } == 0;
        if !installed || !root {
            skip_outside_ci(
                "Slurm is not installed or this is not root (.ci/run installs slurmctld slurmd \
                 slurm-client munge as root)",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        // munged runs as the munge user: it must reach its socket directory.
        set_mode(&d, 0o755);
        let munge = d.join("munge");
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::create_dir_all(&munge).unwrap();
        let status = Command::new("chown")
            .args(["munge:munge"])
            .arg(&munge)
            .status()
            .unwrap();
        assert!(status.success());
        set_mode(&munge, 0o755);
        let socket = munge.join("munge.socket");
        let cpus = std::thread::available_parallelism().unwrap().get();
        let (ctld_port, d_port) = (free_port(), free_port());
        let p = |s: &str| d.join(s).display().to_string();
        let conf = d.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=d2l-test\n\
                 SlurmctldHost=localhost\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 SlurmctldPort={ctld_port}\n\
                 SlurmdPort={d_port}\n\
                 AuthType=auth/munge\n\
                 CredType=cred/munge\n\
                 AuthInfo=socket={socket}\n\
                 StateSaveLocation={state}\n\
                 SlurmdSpoolDir={spool}\n\
                 SlurmctldPidFile={ctld_pid}\n\
                 SlurmdPidFile={d_pid}\n\
                 SlurmctldLogFile={ctld_log}\n\
                 SlurmdLogFile={d_log}\n\
                 MpiDefault=none\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 SchedulerType=sched/backfill\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_CPU\n\
                 ReturnToService=2\n\
                 MinJobAge=600\n\
                 NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
                 PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
                socket = socket.display(),
                state = p("state"),
                spool = p("spool"),
                ctld_pid = p("slurmctld.pid"),
                d_pid = p("slurmd.pid"),
                ctld_log = p("log/slurmctld.log"),
                d_log = p("log/slurmd.log"),
            ),
        )
        .unwrap();
        let mut cluster = Cluster {
            dir,
            conf,
            daemons: Vec::new(),
        };
        let log = |name: &str| std::fs::File::create(d.join("log").join(name)).unwrap();
        let munged = Command::new("setpriv")
            .args([
                "--reuid=munge",
                "--regid=munge",
                "--init-groups",
                "munged",
                "-F",
            ])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
            .arg(format!(
                "--seed-file={}",
                munge.join("munged.seed").display()
            ))
            .arg(format!("--log-file={}", munge.join("munged.log").display()))
            .stdout(log("munged.out"))
            .stderr(log("munged.err"))
            .spawn()
            .unwrap();
        cluster.daemons.push(("munged", munged));
        cluster.wait_for("munged's socket", || socket.exists());
        let ctld = cluster
            .slurm("slurmctld")
            .args(["-D", "-i"])
            .stdout(log("slurmctld.out"))
            .stderr(log("slurmctld.err"))
            .spawn()
            .unwrap();
        cluster.daemons.push(("slurmctld", ctld));
        let slurmd = cluster
            .slurm("slurmd")
            .args(["-D", "-N", "localhost"])
            .stdout(log("slurmd.out"))
            .stderr(log("slurmd.err"))
            .spawn()
            .unwrap();
        cluster.daemons.push(("slurmd", slurmd));
        cluster.wait_for("the node to be idle", || {
            let o = cluster
                .slurm("sinfo")
                .args(["-h", "-o", "%t"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim() == "idle"
        });
        Some(cluster)
    }

    /// A Slurm command reading this cluster's configuration.
    fn slurm(&self, program: &str) -> Command {
        let mut c = Command::new(which(program).unwrap_or_else(|| PathBuf::from(program)));
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn wait_for(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every job and array task Slurm still knows of: (id, state, reason).
    fn jobs(&self) -> Vec<(String, String, String)> {
        self.try_jobs()
            .unwrap_or_else(|e| panic!("squeue: {e}\n{}", self.logs()))
    }

    fn try_jobs(&self) -> Result<Vec<(String, String, String)>, String> {
        let o = self
            .slurm("squeue")
            .args(["-h", "-t", "all", "-r", "-o", "%i %T %r"])
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(stderr(&o));
        }
        Ok(stdout(&o)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(String::from);
                Some((f.next()?, f.next()?, f.next().unwrap_or_default()))
            })
            .collect())
    }

    fn state(&self, id: &str) -> Option<String> {
        self.jobs().into_iter().find(|j| j.0 == id).map(|j| j.1)
    }

    /// Polls until `done` holds for the queue (every 200 ms: `sbatch --wait` polls every 10 s).
    fn wait_jobs(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[(String, String, String)]) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let jobs = self.jobs();
            if done(&jobs) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}: {jobs:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for f in files_under(self.dir.path()) {
            if f.extension()
                .is_some_and(|e| e == "log" || e == "err" || e == "out")
            {
                let body = std::fs::read_to_string(self.dir.path().join(&f)).unwrap_or_default();
                let tail: Vec<&str> = body.lines().rev().take(15).collect();
                text += &format!("--- {}\n", f.display());
                for l in tail.into_iter().rev() {
                    text += l;
                    text.push('\n');
                }
            }
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.slurm("scancel").args(["--user", "root"]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && self.try_jobs().unwrap_or_default().iter().any(|j| {
                matches!(
                    j.1.as_str(),
                    "RUNNING" | "PENDING" | "COMPLETING" | "CONFIGURING"
                )
            })
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self
            .slurm("scontrol")
            .arg("shutdown")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for (_, child) in self.daemons.iter_mut().rev() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                if Instant::now() + Duration::from_secs(8) < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                } else {
                    // SAFETY: a signal to our own child.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `scripts/slurm-sweep.sh` for `sweep` into `out`: the array job's and the merge job's ids.
fn submit(cluster: &Cluster, out: &Path, quiet: bool, sweep: &[&str]) -> (String, String) {
    let o = cluster
        .slurm(repo_root().join("scripts/slurm-sweep.sh").to_str().unwrap())
        .args(["--shards", "3", "--cpus", "1", "--binary", BIN, "--"])
        .args(quiet.then_some("-q"))
        .args(["--device", "cpu", "--out"])
        .arg(out)
        .args(sweep)
        .output()
        .unwrap();
    assert!(o.status.success(), "slurm-sweep.sh: {}", stderr(&o));
    let line = stdout(&o);
    let ids: Vec<&str> = line
        .lines()
        .next()
        .unwrap()
        .strip_prefix("array job ")
        .unwrap()
        .split(", merge job ")
        .collect();
    (ids[0].to_string(), ids[1].to_string())
}

#[test]
fn a_sweep_as_a_slurm_job_array_equals_the_sweep_in_one_process_and_resumes_a_cancelled_task() {
    let started = Instant::now();
    let Some(cluster) = Cluster::start() else {
        return;
    };
    eprintln!("cluster up in {:.1} s", started.elapsed().as_secs_f64());
    let plain = tempfile::tempdir().unwrap();
    succeed_on_one_core(plain.path(), &sweep(&[]));
    let plain = plain.path().join("sweep/weight-decay");

    // The array and its merge.
    let out = tempfile::tempdir().unwrap();
    let (array, merge) = submit(&cluster, out.path(), true, &sweep(&[]));
    cluster.wait_jobs("the merge job", Duration::from_secs(240), |jobs| {
        let merge_state = jobs.iter().find(|j| j.0 == merge).map(|j| j.1.as_str());
        // COMPLETING: the task's script has ended and Slurm is cleaning up after it.
        let failed = jobs.iter().find(|j| {
            j.0.starts_with(&format!("{array}_"))
                && ![
                    "COMPLETED",
                    "COMPLETING",
                    "CONFIGURING",
                    "RUNNING",
                    "PENDING",
                ]
                .contains(&j.1.as_str())
        });
        assert!(
            failed.is_none(),
            "an array task failed: {failed:?}\n{}",
            cluster.logs()
        );
        assert!(
            !matches!(merge_state, Some("FAILED" | "CANCELLED" | "TIMEOUT")),
            "the merge job: {merge_state:?}\n{}",
            cluster.logs()
        );
        merge_state == Some("COMPLETED")
    });
    let tasks: Vec<_> = cluster
        .jobs()
        .into_iter()
        .filter(|j| j.0.starts_with(&format!("{array}_")))
        .collect();
    assert_eq!(tasks.len(), 3, "three array tasks: {tasks:?}");
    assert!(tasks.iter().all(|t| t.1 == "COMPLETED"), "{tasks:?}");
    let dir = out.path().join("sweep/weight-decay");
    assert_same_sweep(&plain, &dir);
    let logs = out.path().join("slurm");
    for k in 0..3 {
        let log = std::fs::read_to_string(logs.join(format!("d2l-weight-decay-{array}_{k}.out")))
            .unwrap();
        assert!(
            log.contains(&format!("shard {k}/3 trained 2 runs")),
            "task {k}: {log}"
        );
    }

    // A task cancelled while it trains: the merge never runs; --resume finishes the sweep.
    let out = tempfile::tempdir().unwrap();
    let (array, merge) = submit(&cluster, out.path(), false, &sweep(&[]));
    let task = format!("{array}_1");
    // Task 1 trains seed 1's group (λ = 0, then 3): cancelled as its second run starts (its
    // progress lines are in the task's log), so the group is half trained.
    let task_log = out
        .path()
        .join(format!("slurm/d2l-weight-decay-{task}.out"));
    cluster.wait_for("task 1's second run", || {
        std::fs::read_to_string(&task_log).is_ok_and(|l| l.contains("λ=3, seed 1 epoch 1/"))
    });
    assert_eq!(cluster.state(&task).as_deref(), Some("RUNNING"));
    let status = cluster.slurm("scancel").arg(&task).status().unwrap();
    assert!(status.success());
    cluster.wait_jobs("the other tasks", Duration::from_secs(120), |jobs| {
        jobs.iter()
            .filter(|j| j.0.starts_with(&format!("{array}_")))
            .all(|j| j.1 != "RUNNING" && j.1 != "PENDING" && j.1 != "COMPLETING")
    });
    assert_eq!(cluster.state(&task).as_deref(), Some("CANCELLED"));
    let (_, merge_state, reason) = cluster.jobs().into_iter().find(|j| j.0 == merge).unwrap();
    assert_eq!(
        merge_state, "PENDING",
        "the merge waits for a task that will never succeed"
    );
    assert!(reason.contains("Dependency"), "{reason}");
    let dir = out.path().join("sweep/weight-decay");
    assert!(!dir.join("summary.csv").exists());
    assert!(cluster
        .slurm("scancel")
        .arg(&merge)
        .status()
        .unwrap()
        .success());
    let o = succeed_on_one_core(out.path(), &sweep(&["--resume"]));
    let task_log = std::fs::read_to_string(&task_log).unwrap_or_default();
    assert!(
        stderr(&o).contains("kept 4 finished runs, trained 2"),
        "{}\ntask 1's log:\n{task_log}\n{}",
        stderr(&o),
        cluster.logs()
    );
    assert_same_sweep(&plain, &dir);

    // A dropout sweep whose tasks are stopped as a scheduler stops them: task 0 requeued
    // (`scontrol requeue`, what a preemption does), task 1 warned that its time is nearly up
    // (USR1 to its batch script, what `--signal=B:USR1@…` sends). Both start again and go on
    // from their checkpoints; the merged files are the undisturbed sweep's.
    if let Some(data) = real_data_dir() {
        requeued_tasks_continue_from_their_checkpoints(&cluster, data.to_str().unwrap());
    }
    drop(cluster);
    eprintln!(
        "Slurm test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

fn requeued_tasks_continue_from_their_checkpoints(cluster: &Cluster, data: &str) {
    let sweep = fused_dropout_sweep("0,0.2,0.5", data);
    let plain = tempfile::tempdir().unwrap();
    succeed_on_one_core(plain.path(), &sweep);
    let out = tempfile::tempdir().unwrap();
    let (array, merge) = submit(cluster, out.path(), false, &sweep);
    let checkpoint = |p: &str| {
        let file = out.path().join(format!(
            "sweep/dropout/checkpoints/concise-p{p}-0.5-seed0.safetensors"
        ));
        d2l_regularization::checkpoint::describe(&file)
            .map(|m| m.epoch)
            .unwrap_or(0)
    };
    // Task k trains the k-th setting (--dropout1 0, 0.2, 0.5): both stopped in their second
    // epoch, once their first is saved.
    let deadline = Instant::now() + Duration::from_secs(240);
    while checkpoint("0") < 1 || checkpoint("0.2") < 1 {
        assert!(
            Instant::now() < deadline,
            "no checkpoints\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (requeued, warned) = (format!("{array}_0"), format!("{array}_1"));
    assert!(cluster
        .slurm("scontrol")
        .args(["requeue", &requeued])
        .status()
        .unwrap()
        .success());
    assert!(cluster
        .slurm("scancel")
        .args(["--signal", "USR1", "--batch", &warned])
        .status()
        .unwrap()
        .success());
    cluster.wait_jobs("the merge job", Duration::from_secs(420), |jobs| {
        let merge_state = jobs.iter().find(|j| j.0 == merge).map(|j| j.1.as_str());
        assert!(
            !matches!(merge_state, Some("FAILED" | "CANCELLED" | "TIMEOUT")),
            "the merge job: {merge_state:?} {jobs:?}\n{}",
            cluster.logs()
        );
        merge_state == Some("COMPLETED")
    });
    let log = |task: &str| {
        std::fs::read_to_string(out.path().join(format!("slurm/d2l-dropout-{task}.out")))
            .unwrap_or_default()
    };
    for task in [&requeued, &warned] {
        assert!(
            log(task).contains("continuing from its checkpoint after epoch"),
            "task {task} started again from its checkpoint:\n{}",
            log(task)
        );
    }
    assert!(
        log(&warned).contains("time is nearly up; requeued"),
        "{}",
        log(&warned)
    );
    assert_same_sweep(
        &plain.path().join("sweep/dropout"),
        &out.path().join("sweep/dropout"),
    );
}
