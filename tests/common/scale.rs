//! Sites grown to scale for the validation benchmark and the scale tests:
//! TOML text of many hosts or VLANs, appended to the example's fra1, each
//! entry valid on its own so that only the problem a case asks for is
//! reported.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The example site the generators grow.
pub const SITE: &str = "sites/fra1.toml";

/// The VLAN that holds the generated hosts: room for a million of them.
pub const BULK_VLAN: &str = "\n[[vlans]]\nid = 50\nname = \"bulk\"\nsubnet = \"10.64.0.0/12\"\ngateway = \"10.64.0.1\"\ninterface = \"eth1.50\"\n";

/// A pinned host key of the example; the generated hosts share it.
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzD9J5UrJC7KIbiQ1pJlfnxtccwQ75TsKa1fepLnrhV";

/// `n` hosts in the bulk VLAN, each with its own MAC and address, named by
/// `name(i)`.
pub fn hosts(n: usize, name: impl Fn(usize) -> String) -> String {
    let mut text = String::with_capacity(n * 200);
    for i in 0..n {
        let k = u32::try_from(i).expect("fewer than 2^32 hosts");
        let [a, b, c, d] = k.to_be_bytes();
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 2)) + k);
        let _ = write!(
            text,
            "\n[[hosts]]\nname = \"{}\"\nvlan = \"bulk\"\nmac = \"02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}\"\nip = \"{ip}\"\nimage = \"dns\"\nssh = {{ host_key = \"{HOST_KEY}\" }}\n",
            name(i)
        );
    }
    text
}

/// `n` VLANs with their own names, interfaces and /30 subnets (from
/// 10.128.0.0), each with VLAN id `id`.
pub fn vlans(n: usize, id: u16) -> String {
    let mut text = String::with_capacity(n * 120);
    for i in 0..n {
        let k = u32::try_from(i).expect("fewer than 2^32 VLANs");
        let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + 4 * k);
        let gateway = Ipv4Addr::from(u32::from(net) + 1);
        let _ = write!(
            text,
            "\n[[vlans]]\nid = {id}\nname = \"v{i}\"\nsubnet = \"{net}/30\"\ngateway = \"{gateway}\"\ninterface = \"vl{i}\"\n"
        );
    }
    text
}

/// The 1-based numbers of the lines of `text` equal to `line`.
pub fn lines_equal(text: &str, line: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| *l == line)
        .map(|(i, _)| i + 1)
        .collect()
}

/// Waits for `child`, started in a process group of its own, for at most
/// `limit`; past it the whole group is killed and there is no status.
pub fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for sov") {
            return Some(status);
        }
        if start.elapsed() > limit {
            let group = rustix::process::Pid::from_child(child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
