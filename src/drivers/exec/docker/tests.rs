//! Tests of the docker driver's container configuration.

use super::*;

fn spec() -> ContainerSpec {
    ContainerSpec {
        image: "busybox".into(),
        cmd: "id -u".into(),
        pid: 7,
        uid: 600_123,
        gid: 600_123,
        workspace: PathBuf::from("/var/lib/agentos/workspaces/7"),
        limits: Limits {
            memory_bytes: 64 << 20,
            pids: 64,
            cpu_percent: 50,
            wall_time_s: 0,
            max_turns: 0,
            workspace_bytes: 1 << 30,
            max_file_bytes: 1 << 20,
            max_read_bytes: 1 << 20,
            nofile: 64,
            syscalls_per_s: 0,
            tmp_bytes: 16 << 20,
            budget_tokens: 0,
            inbox_bytes: 1 << 20,
            stdin_bytes: 1 << 20,
            log_bytes: 1 << 20,
            memory_store_bytes: 1 << 20,
            recv_reply_bytes: 1 << 20,
            reply_bytes_in_flight: 1 << 20,
            journal_bytes: 1 << 20,
            audit_entries: 100,
            max_descendants: 16,
            max_depth: 4,
        },
        allow_network: false,
        name: "t".into(),
        owner: "/var/lib/agentos".into(),
    }
}

fn ws() -> PathBuf {
    spec().workspace
}

#[test]
fn the_built_configuration_is_locked_down() {
    let hc = host_config(&spec()).expect("the daemon's own configuration passes");
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(hc.memory, Some(64 << 20));
    assert_eq!(hc.pids_limit, Some(64));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    let mounts = hc.mounts.expect("mounts");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].target.as_deref(), Some("/workspace"));
    assert!(hc.tmpfs.expect("tmpfs").contains_key("/tmp"));

    let mut networked = spec();
    networked.allow_network = true;
    let hc = host_config(&networked).expect("networked");
    assert_eq!(hc.network_mode.as_deref(), Some("bridge"));

    let body = create_body(&spec()).expect("body");
    assert_eq!(body.user.as_deref(), Some("600123:600123"));
    assert_eq!(body.working_dir.as_deref(), Some("/workspace"));
    let mut root = spec();
    root.uid = 0;
    assert!(create_body(&root).is_err(), "root is refused");
}

/// Every weakening of the configuration is refused.
#[test]
fn weakened_configurations_are_refused() {
    let good = host_config(&spec()).expect("good");
    type Change = Box<dyn Fn(&mut HostConfig)>;
    let cases: Vec<(&str, Change)> = vec![
        ("privileged", Box::new(|h| h.privileged = Some(true))),
        ("privileged unset", Box::new(|h| h.privileged = None)),
        (
            "host network",
            Box::new(|h| h.network_mode = Some("host".into())),
        ),
        (
            "another container's network",
            Box::new(|h| h.network_mode = Some("container:abc".into())),
        ),
        (
            "bridge without permission",
            Box::new(|h| h.network_mode = Some("bridge".into())),
        ),
        ("default network", Box::new(|h| h.network_mode = None)),
        ("host pid", Box::new(|h| h.pid_mode = Some("host".into()))),
        (
            "another container's pid",
            Box::new(|h| h.pid_mode = Some("container:abc".into())),
        ),
        ("host ipc", Box::new(|h| h.ipc_mode = Some("host".into()))),
        (
            "shareable ipc",
            Box::new(|h| h.ipc_mode = Some("shareable".into())),
        ),
        ("host uts", Box::new(|h| h.uts_mode = Some("host".into()))),
        (
            "host userns",
            Box::new(|h| h.userns_mode = Some("host".into())),
        ),
        (
            "host cgroupns",
            Box::new(|h| h.cgroupns_mode = Some(HostConfigCgroupnsModeEnum::HOST)),
        ),
        (
            "added capability",
            Box::new(|h| h.cap_add = Some(vec!["SYS_ADMIN".into()])),
        ),
        ("capabilities kept", Box::new(|h| h.cap_drop = None)),
        (
            "some capabilities kept",
            Box::new(|h| h.cap_drop = Some(vec!["NET_RAW".into()])),
        ),
        (
            "a device",
            Box::new(|h| {
                h.devices = Some(vec![bollard::models::DeviceMapping {
                    path_on_host: Some("/dev/sda".into()),
                    path_in_container: Some("/dev/sda".into()),
                    cgroup_permissions: Some("rwm".into()),
                }])
            }),
        ),
        (
            "a device request",
            Box::new(|h| h.device_requests = Some(vec![Default::default()])),
        ),
        (
            "device cgroup rule",
            Box::new(|h| h.device_cgroup_rules = Some(vec!["a *:* rwm".into()])),
        ),
        (
            "a host bind",
            Box::new(|h| h.binds = Some(vec!["/:/host".into()])),
        ),
        (
            "the docker socket",
            Box::new(|h| h.binds = Some(vec!["/var/run/docker.sock:/var/run/docker.sock".into()])),
        ),
        (
            "a second mount",
            Box::new(|h| {
                let mut m = h.mounts.clone().unwrap_or_default();
                m.push(Mount {
                    typ: Some(MountType::BIND),
                    source: Some("/etc".into()),
                    target: Some("/etc".into()),
                    ..Default::default()
                });
                h.mounts = Some(m);
            }),
        ),
        (
            "another host path as the workspace",
            Box::new(|h| {
                h.mounts = Some(vec![Mount {
                    typ: Some(MountType::BIND),
                    source: Some("/root".into()),
                    target: Some("/workspace".into()),
                    ..Default::default()
                }])
            }),
        ),
        (
            "a volume as the workspace",
            Box::new(|h| {
                if let Some(m) = h.mounts.as_mut() {
                    m[0].typ = Some(MountType::VOLUME);
                }
            }),
        ),
        ("no mount", Box::new(|h| h.mounts = None)),
        (
            "volumes from",
            Box::new(|h| h.volumes_from = Some(vec!["other".into()])),
        ),
        (
            "writable root",
            Box::new(|h| h.readonly_rootfs = Some(false)),
        ),
        (
            "seccomp unconfined",
            Box::new(|h| {
                h.security_opt = Some(vec![NO_NEW_PRIVILEGES.into(), "seccomp=unconfined".into()])
            }),
        ),
        (
            "apparmor unconfined",
            Box::new(|h| h.security_opt = Some(vec!["apparmor=unconfined".into()])),
        ),
        ("new privileges", Box::new(|h| h.security_opt = None)),
        (
            "unmasked /proc",
            Box::new(|h| h.masked_paths = Some(Vec::new())),
        ),
        (
            "writable /proc/sys",
            Box::new(|h| h.readonly_paths = Some(Vec::new())),
        ),
        (
            "sysctl",
            Box::new(|h| {
                h.sysctls = Some(HashMap::from([("net.ipv4.ip_forward".into(), "1".into())]))
            }),
        ),
        (
            "extra tmpfs",
            Box::new(|h| {
                if let Some(t) = h.tmpfs.as_mut() {
                    t.insert("/etc".into(), String::new());
                }
            }),
        ),
        (
            "root group",
            Box::new(|h| h.group_add = Some(vec!["0".into()])),
        ),
        ("no memory limit", Box::new(|h| h.memory = None)),
        ("swap", Box::new(|h| h.memory_swap = Some(-1))),
        ("no pids limit", Box::new(|h| h.pids_limit = Some(0))),
        ("no cpu limit", Box::new(|h| h.nano_cpus = None)),
        (
            "no OOM killer",
            Box::new(|h| h.oom_kill_disable = Some(true)),
        ),
        (
            "other runtime",
            Box::new(|h| h.runtime = Some("runsc-debug".into())),
        ),
        (
            "cgroup parent",
            Box::new(|h| h.cgroup_parent = Some("/".into())),
        ),
        (
            "published ports",
            Box::new(|h| h.publish_all_ports = Some(true)),
        ),
    ];
    for (name, change) in cases {
        let mut hc = good.clone();
        change(&mut hc);
        assert!(
            check_host_config(&hc, &ws(), false).is_err(),
            "{name} was accepted: {hc:?}"
        );
    }
    assert!(check_host_config(&good, &ws(), false).is_ok());
    assert!(
        check_host_config(&good, Path::new("/var/lib/agentos/workspaces/8"), false).is_err(),
        "another agent's workspace"
    );
}
