//! Real test hosts for the end-to-end tests: each one a systemd-nspawn
//! container booted from an overlay of the cached base root filesystem
//! (tests/hosts/rootfs.sh), with its own network namespace, address, machine
//! id, `/etc`, `/run`, `/var/lib/sov` and sshd host key. The test process
//! reaches every host over a bridge in its own namespace; hosts may also share
//! private segments the test process cannot see.
//!
//! Names of everything a lab creates start with `sovlab<id>-`, and
//! tests/hosts/cleanup.sh removes the leftovers of crashed runs by them.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

/// Where labs keep their folders and locks; tests/hosts/cleanup.sh agrees.
const BASE: &str = "/var/tmp/sovlab";
/// Lab `id` manages its hosts on 10.77.<id>.0/24: the test process is .1 and
/// host `i` (from 1) is .<10 + i>. Only used on links the lab creates.
const MANAGEMENT_NET: [u8; 2] = [10, 77];
const MAX_HOSTS: usize = 200;
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const SSH_TIMEOUT_SECS: &str = "120";

/// What a host is before it starts. Every host gets `eth0` on the
/// management network; `links` add interfaces on private segments.
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub name: String,
    pub links: Vec<LinkSpec>,
    /// Routes added after the links: (destination, gateway).
    pub routes: Vec<(String, Ipv4Addr)>,
}

/// An interface of a host on a private segment: a bridge shared by every
/// link naming the same segment, living in a namespace of its own that the
/// test process has no address in (a VLAN behind a firewall host, say).
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub ifname: String,
    pub segment: String,
    pub address: Ipv4Net,
}

impl HostSpec {
    pub fn new(name: &str) -> HostSpec {
        HostSpec {
            name: name.to_string(),
            links: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Adds interface `ifname` with `address` ("10.10.1.1/24") on `segment`.
    pub fn link(mut self, ifname: &str, segment: &str, address: &str) -> HostSpec {
        self.links.push(LinkSpec {
            ifname: ifname.to_string(),
            segment: segment.to_string(),
            address: address.parse().expect("link address like 10.10.1.1/24"),
        });
        self
    }

    /// Routes `destination` ("default", "10.10.0.0/16") through `via`, an
    /// address on one of the host's links: a host behind a firewall host.
    pub fn route(mut self, destination: &str, via: &str) -> HostSpec {
        self.routes.push((
            destination.to_string(),
            via.parse().expect("gateway address like 10.10.1.1"),
        ));
        self
    }
}

/// A running host.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    /// Its management address, reachable from the test process.
    pub address: Ipv4Addr,
    /// The sshd host key, as pinned in a site: "ssh-ed25519 AAAA…".
    pub host_key_pub: String,
    /// Its network namespace, for `ip netns exec`.
    pub netns: String,
    /// Its root filesystem as seen from the test process (the overlay's
    /// merged folder): inspect what a deploy wrote without going over ssh.
    pub root: PathBuf,
    /// systemd's console output, for failure messages.
    pub console: PathBuf,
    pub spec: HostSpec,
    nspawn: Option<Child>,
}

/// A set of running hosts; dropping it tears every one of them down.
#[derive(Debug)]
pub struct Lab {
    pub hosts: Vec<Host>,
    /// The private key the hosts' root accepts.
    pub client_key: PathBuf,
    /// Every host's management address with its pinned host key.
    pub known_hosts: PathBuf,
    /// An ssh_config (`ssh -F`) with the key, known_hosts, user root and
    /// strict host key checking for every host of the lab.
    pub ssh_config: PathBuf,
    /// The test process's own address on the management network.
    pub gateway: Ipv4Addr,
    pub id: u8,
    pub dir: PathBuf,
    segments: Vec<String>,
    _lock: File,
}

impl Lab {
    /// Starts `n` identical hosts h1…hn. None when the test is skipped (not
    /// root or a tool missing, outside CI).
    pub fn start(n: usize) -> Option<Lab> {
        Lab::start_with((1..=n).map(|i| HostSpec::new(&format!("h{i}"))).collect())
    }

    pub fn start_with(specs: Vec<HostSpec>) -> Option<Lab> {
        if !super::require_root() {
            return None;
        }
        for tool in [
            "systemd-nspawn",
            "debootstrap",
            "ssh",
            "ssh-keygen",
            "ip",
            "flock",
            "findmnt",
        ] {
            if !super::require(tool) {
                return None;
            }
        }
        assert!(
            !specs.is_empty() && specs.len() <= MAX_HOSTS,
            "a lab has 1 to {MAX_HOSTS} hosts"
        );
        for (i, spec) in specs.iter().enumerate() {
            check_name(&spec.name);
            assert!(
                !specs[..i].iter().any(|s| s.name == spec.name),
                "two hosts named {}",
                spec.name
            );
        }

        let started = Instant::now();
        let rootfs = base_rootfs();
        let mut lab = Lab::reserve();
        lab.create_network();
        let client_pub = keygen(&lab.client_key, "sov-test-client");

        // Prepared one after the other (cheap), booted all at once (slow).
        for (i, spec) in specs.into_iter().enumerate() {
            let host = lab.prepare(i + 1, spec, &rootfs, &client_pub);
            lab.hosts.push(host);
        }
        lab.write_ssh_files();
        for host in &mut lab.hosts {
            host.boot(lab.id);
        }
        lab.wait_for_ssh(started + BOOT_TIMEOUT);
        eprintln!(
            "lab {}: {} hosts up in {:.2?}",
            lab.id,
            lab.hosts.len(),
            started.elapsed()
        );
        Some(lab)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// `ssh` to `host` as root, strict about its pinned key, with the
    /// options but without a command: add arguments, stdin, then run.
    pub fn ssh_command(&self, host: &Host) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", SSH_TIMEOUT_SECS, "ssh"])
            .args(self.ssh_options())
            .arg(format!("root@{}", host.address));
        cmd
    }

    /// The ssh options that reach the lab's hosts, for giving to another
    /// program (sov itself): key, known_hosts, strict checking, timeouts.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut opts = vec!["-i".to_string(), self.client_key.display().to_string()];
        for o in [
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "StrictHostKeyChecking=yes".to_string(),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "BatchMode=yes".to_string(),
            "ConnectTimeout=10".to_string(),
            "ServerAliveInterval=5".to_string(),
            "ServerAliveCountMax=6".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            opts.push("-o".to_string());
            opts.push(o);
        }
        opts
    }

    /// Runs `argv` on `host` (each word quoted for the remote shell) and
    /// returns what it did; times out after two minutes.
    pub fn ssh(&self, host: &Host, argv: &[&str]) -> Output {
        self.ssh_command(host)
            .arg("--")
            .arg(shell_join(argv))
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Like `ssh`, but the command must succeed; returns its stdout.
    pub fn ssh_ok(&self, host: &Host, argv: &[&str]) -> String {
        let out = self.ssh(host, argv);
        assert!(
            out.status.success(),
            "on {}: {:?} failed ({}):\n{}",
            host.name,
            argv,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Takes the first free lab id (its lock held for the lab's lifetime)
    /// and clears what a crashed run with the same id may have left.
    fn reserve() -> Lab {
        fs::create_dir_all(BASE).expect("create the lab base folder");
        for id in 1..=254u8 {
            let lock = File::create(Path::new(BASE).join(format!("{id}.lock"))).expect("lock");
            if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
            {
                continue;
            }
            run(Command::new(script("cleanup.sh")).args(["--lab", &id.to_string()]));
            let dir = Path::new(BASE).join(id.to_string());
            fs::create_dir_all(&dir).expect("create the lab folder");
            return Lab {
                hosts: Vec::new(),
                client_key: dir.join("client"),
                known_hosts: dir.join("known_hosts"),
                ssh_config: dir.join("ssh_config"),
                gateway: Ipv4Addr::new(MANAGEMENT_NET[0], MANAGEMENT_NET[1], id, 1),
                id,
                dir,
                segments: Vec::new(),
                _lock: lock,
            };
        }
        panic!("every lab id is in use ({BASE}/*.lock); run tests/hosts/cleanup.sh");
    }

    fn bridge(&self) -> String {
        format!("sovlab{}-br", self.id)
    }

    /// The bridge of the management network, with the test process on it.
    fn create_network(&self) {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", self.gateway), "dev", &br]);
        ip(&["link", "set", &br, "up"]);
    }

    /// The namespace holding the bridges of private segments (no host name
    /// starts with '-', so no host's namespace is called that).
    fn switch_netns(&self) -> String {
        format!("sovlab{}--segments", self.id)
    }

    /// The bridge of `segment` in the switch namespace, created on first use.
    fn segment_bridge(&mut self, segment: &str) -> String {
        let sw = self.switch_netns();
        if self.segments.is_empty() {
            ip(&["netns", "add", &sw]);
        }
        let k = match self.segments.iter().position(|s| s == segment) {
            Some(k) => k,
            None => {
                self.segments.push(segment.to_string());
                let k = self.segments.len() - 1;
                let br = format!("seg{k}");
                ip(&["-n", &sw, "link", "add", &br, "type", "bridge"]);
                ip(&["-n", &sw, "link", "set", &br, "up"]);
                k
            }
        };
        format!("seg{k}")
    }

    /// Mounts host `i`'s root, writes its identity and wires its network.
    fn prepare(&mut self, i: usize, spec: HostSpec, rootfs: &Path, client_pub: &str) -> Host {
        let dir = self.dir.join(&spec.name);
        let root = dir.join("root");
        for sub in ["upper", "work", "root"] {
            fs::create_dir_all(dir.join(sub)).expect("create host folders");
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            rootfs.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&root));

        fs::write(root.join("etc/hostname"), format!("{}\n", spec.name)).expect("hostname");
        let host_key_pub = keygen(&root.join("etc/ssh/ssh_host_ed25519_key"), &spec.name)
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let ssh_dir = root.join("root/.ssh");
        fs::create_dir_all(&ssh_dir).expect("mkdir /root/.ssh");
        fs::write(ssh_dir.join("authorized_keys"), client_pub).expect("authorized_keys");
        chmod(&ssh_dir, 0o700);
        chmod(&ssh_dir.join("authorized_keys"), 0o600);

        let netns = format!("sovlab{}-{}", self.id, spec.name);
        let address = Ipv4Addr::new(MANAGEMENT_NET[0], MANAGEMENT_NET[1], self.id, 10 + i as u8);
        let outside = format!("sovlab{}-h{i}", self.id);
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["link", "set", &outside, "master", &self.bridge(), "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        for (j, link) in spec.links.iter().enumerate() {
            let br = self.segment_bridge(&link.segment);
            let sw = self.switch_netns();
            let port = format!("h{i}l{j}");
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                &link.ifname,
                "netns",
                &netns,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", &br, "up"]);
            let addr = link.address.to_string();
            ip(&["-n", &netns, "addr", "add", &addr, "dev", &link.ifname]);
            ip(&["-n", &netns, "link", "set", &link.ifname, "up"]);
        }
        for (destination, via) in &spec.routes {
            let via = via.to_string();
            ip(&["-n", &netns, "route", "add", destination, "via", &via]);
        }

        Host {
            name: spec.name.clone(),
            address,
            host_key_pub,
            netns,
            root,
            console: dir.join("console.log"),
            spec,
            nspawn: None,
        }
    }

    fn write_ssh_files(&self) {
        let mut known = String::new();
        for h in &self.hosts {
            writeln!(known, "{} {}", h.address, h.host_key_pub).expect("string");
        }
        fs::write(&self.known_hosts, known).expect("write known_hosts");
        let mut config = format!(
            "Host {}.{}.{}.*\n  User root\n",
            MANAGEMENT_NET[0], MANAGEMENT_NET[1], self.id
        );
        for pair in self.ssh_options()[2..].chunks(2) {
            let (key, value) = pair[1].split_once('=').expect("key=value");
            writeln!(config, "  {key} {value}").expect("string");
        }
        writeln!(config, "  IdentityFile {}", self.client_key.display()).expect("string");
        fs::write(&self.ssh_config, config).expect("write ssh_config");
    }

    /// Waits until every host's sshd lets the client in with its pinned key.
    fn wait_for_ssh(&mut self, deadline: Instant) {
        let mut pending: Vec<usize> = (0..self.hosts.len()).collect();
        let mut last_error = vec![String::new(); self.hosts.len()];
        while !pending.is_empty() {
            let probes: Vec<(usize, Child)> = pending
                .iter()
                .map(|&k| {
                    let child = self
                        .ssh_command(&self.hosts[k])
                        .args(["--", "true"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("run ssh");
                    (k, child)
                })
                .collect();
            let mut still = Vec::new();
            for (k, child) in probes {
                let out = child.wait_with_output().expect("wait for ssh");
                if !out.status.success() {
                    last_error[k] = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    still.push(k);
                }
            }
            pending = still;
            for &k in &pending {
                let host = &mut self.hosts[k];
                let exited = host
                    .nspawn
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    panic!(
                        "host {} stopped before its sshd came up ({status}); console:\n{}",
                        host.name,
                        host.console_tail()
                    );
                }
                if Instant::now() > deadline {
                    panic!(
                        "host {} ({}): no ssh login within {BOOT_TIMEOUT:?}; ssh said: {}\nconsole:\n{}",
                        host.name,
                        host.address,
                        last_error[k],
                        host.console_tail()
                    );
                }
            }
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Host {
    fn boot(&mut self, lab: u8) {
        let console = File::create(&self.console).expect("console log");
        let child = Command::new("systemd-nspawn")
            .arg("--boot")
            .arg(format!("--machine=sovlab{lab}-{}", self.name))
            .arg("--directory")
            .arg(&self.root)
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                self.netns
            ))
            .args(keep_unit())
            // The host's own namespace is its to configure: a firewall host
            // loads its ruleset, a router its addresses and turns on
            // forwarding (nspawn leaves /proc/sys/net read-only when the
            // namespace comes from outside, unless told otherwise).
            .arg("--capability=CAP_NET_ADMIN")
            .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
            .args([
                "--register=no",
                "--settings=no",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                "--console=read-only",
            ])
            .arg("--setenv=SYSTEMD_COLORS=0")
            // What units log reaches the console log too, so a failure
            // message can say why sshd did not start.
            .args([
                "--",
                "systemd.journald.forward_to_console=1",
                "systemd.journald.max_level_console=info",
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console log"))
            .stderr(console)
            .spawn()
            .expect("run systemd-nspawn");
        self.nspawn = Some(child);
    }

    /// The last lines systemd and nspawn printed.
    pub fn console_tail(&self) -> String {
        let text = fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// Kills the container: its init, and with it its whole pid namespace.
    fn kill(&self) {
        let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
        else {
            return;
        };
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let started = Instant::now();
        for host in &self.hosts {
            host.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for host in &mut self.hosts {
            let Some(child) = host.nspawn.as_mut() else {
                continue;
            };
            while let Ok(None) = child.try_wait() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The rest (mounts, namespaces, links, folders) the same way a
        // crashed run's leftovers go; never panic here, we may be unwinding.
        match Command::new(script("cleanup.sh"))
            .args(["--lab", &self.id.to_string()])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "lab {}: cleanup failed: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(err) => eprintln!("lab {}: cannot run cleanup.sh: {err}", self.id),
        }
        eprintln!("lab {}: torn down in {:.2?}", self.id, started.elapsed());
    }
}

/// Where systemd is init, nspawn asks it for a scope of its own, with the
/// cgroup delegation that implies; elsewhere (a bare VM or a container
/// whose PID 1 is not systemd) it stays in the caller's cgroup.
fn keep_unit() -> Option<&'static str> {
    let systemd_is_init = Path::new("/run/systemd/system").is_dir();
    (!systemd_is_init).then_some("--keep-unit")
}

/// The cached base root filesystem, built on first use.
fn base_rootfs() -> PathBuf {
    let out = Command::new(script("rootfs.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/hosts/rootfs.sh");
    assert!(
        out.status.success(),
        "tests/hosts/rootfs.sh failed ({})",
        out.status
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn script(name: &str) -> PathBuf {
    super::repo().join("tests/hosts").join(name)
}

/// Host names become hostnames, namespace and machine names.
fn check_name(name: &str) {
    assert!(
        !name.is_empty()
            && name.len() <= 20
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-'),
        "host name {name:?}: use 1-20 of a-z, 0-9, '-'"
    );
}

/// A new ed25519 key pair at `path`; returns the public line.
fn keygen(path: &Path, comment: &str) -> String {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path));
    fs::read_to_string(path.with_extension("pub")).expect("read the public key")
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn shell_join(argv: &[&str]) -> String {
    argv.iter()
        .map(|w| sov::render::shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}
