//! The container runtime's side of a Docker daemon outage: whether the daemon answers
//! (`/_ping`, bounded), whether a container that survived the daemon's restart (live-restore)
//! still runs the spec it was created from and so may be adopted, and stopping a container's
//! processes directly when the daemon cannot.
//!
//! Not here: the API calls of the runtime (`super`), or the decision to wait for the daemon
//! (`crate::supervise::supervisor`).

use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::Docker;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether the daemon answers `/_ping` within `timeout`.
pub(super) async fn answers(docker: &Docker, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, docker.ping()).await, Ok(Ok(_)))
}

/// Seconds since the epoch, as the logs API's `since` takes them.
pub(super) fn unix_now() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// An empty string is the daemon's way of saying "not set".
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Whether the inspected container runs what `body` would create: the image, every label
/// (managed, instance, cpus), the command and the cpuset. `Err` names the first difference.
pub(super) fn runs_spec(
    c: &ContainerInspectResponse,
    body: &ContainerCreateBody,
) -> Result<(), String> {
    let config = c.config.clone().unwrap_or_default();
    if config.image != body.image {
        return Err(format!("image {:?}, want {:?}", config.image, body.image));
    }
    let labels = config.labels.unwrap_or_default();
    for (k, v) in body.labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Err(format!("label {k}={:?}, want {v:?}", labels.get(k)));
        }
    }
    if config.entrypoint != body.entrypoint {
        return Err(format!("command {:?}, want {:?}", config.entrypoint, body.entrypoint));
    }
    let host = c.host_config.clone().unwrap_or_default();
    let want = body.host_config.clone().unwrap_or_default();
    for (what, got, want) in [
        ("cpuset cpus", &host.cpuset_cpus, &want.cpuset_cpus),
        ("cpuset mems", &host.cpuset_mems, &want.cpuset_mems),
    ] {
        if set(got) != set(want) {
            return Err(format!("{what} {:?}, want {:?}", set(got), set(want)));
        }
    }
    Ok(())
}

/// SIGTERM to every pid, up to `grace` for them to go, then SIGKILL to what is left.
pub(super) async fn kill_all(pids: &[i32], grace: Duration) {
    let alive = |p: &i32| kill(Pid::from_raw(*p), None).is_ok();
    for p in pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while pids.iter().any(alive) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in pids.iter().filter(|p| alive(p)) {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{ContainerConfig, HostConfig};

    use super::*;

    fn body() -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some("img:1".into()),
            entrypoint: Some(vec!["/nodeagent".into(), "simulate".into()]),
            labels: Some(HashMap::from([
                ("io.nodeagent.managed".to_string(), "true".to_string()),
                ("io.nodeagent.instance".to_string(), "0".to_string()),
            ])),
            host_config: Some(HostConfig {
                cpuset_cpus: Some("1".into()),
                cpuset_mems: None,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What `docker inspect` answers for a container created from `body()`: the daemon adds
    /// labels of its own and reports an unset cpuset as "".
    fn inspected() -> ContainerInspectResponse {
        let b = body();
        let mut labels = b.labels.clone().unwrap();
        labels.insert("org.opencontainers.image.title".into(), "x".into());
        ContainerInspectResponse {
            config: Some(ContainerConfig {
                image: b.image.clone(),
                entrypoint: b.entrypoint.clone(),
                labels: Some(labels),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                cpuset_cpus: Some("1".into()),
                cpuset_mems: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_container_of_this_spec_is_adoptable_and_any_difference_is_named() {
        assert_eq!(runs_spec(&inspected(), &body()), Ok(()));
        let mut other = inspected();
        other.config.as_mut().unwrap().image = Some("img:2".into());
        assert!(runs_spec(&other, &body()).unwrap_err().starts_with("image "));
        let mut other = inspected();
        other
            .config
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("io.nodeagent.instance".into(), "1".into());
        let why = runs_spec(&other, &body()).unwrap_err();
        assert!(why.starts_with("label io.nodeagent.instance="), "{why}");
        let mut other = inspected();
        other.host_config.as_mut().unwrap().cpuset_cpus = Some("0-1".into());
        assert!(runs_spec(&other, &body()).unwrap_err().starts_with("cpuset cpus"));
        let mut other = inspected();
        other.config.as_mut().unwrap().entrypoint = Some(vec!["/bin/sh".into()]);
        assert!(runs_spec(&other, &body()).unwrap_err().starts_with("command"));
        // Nothing inspected (a daemon answering oddly): not adoptable, no panic.
        assert!(runs_spec(&ContainerInspectResponse::default(), &body()).is_err());
    }

    #[tokio::test]
    async fn kill_all_ends_a_process_that_ignores_sigterm() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 30"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Give the shell time to install its trap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill_all(&[pid], Duration::from_millis(300)).await;
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}
