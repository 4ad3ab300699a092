//! Both directions of the agent protocol, each checked against the shell
//! side it must match.

use std::time::Duration;

use super::*;

fn object(name: &str) -> ObjectName {
    format!("{}-{name}", "a".repeat(64)).parse().unwrap()
}

fn tail(call: &Call<'_>) -> Vec<String> {
    call.argv(Agent::Stored(&object("sov-agent.sh")), "/var/lib/sov")
}

#[test]
fn how_the_agent_runs_comes_first_then_command_and_root() {
    let agent = object("sov-agent.sh");
    let stored = format!("/var/lib/sov/store/{agent}");
    assert_eq!(
        Call::State.argv(Agent::Stored(&agent), "/var/lib/sov"),
        ["sh", stored.as_str(), "state", "/var/lib/sov"]
    );
    assert_eq!(
        Call::State.argv(Agent::Probe(&agent), "/r")[..3],
        ["sh", "-c", PROBE]
    );
    let inline = Call::State.argv(Agent::Inline, "/r");
    assert_eq!(inline[..4], ["sh", "-c", AGENT, "sov-agent"]);
    assert_eq!(inline[4..], ["state", "/r"]);
}

#[test]
fn every_call_puts_its_arguments_where_the_agent_reads_them() {
    let (m, a) = (object("m.json"), object("sov-agent.sh"));
    let paths = ["/srv/a".to_string(), "/srv/b".to_string()];
    let dictionary = [object("d1"), object("d2")];
    let cases: Vec<(Call<'_>, Vec<String>)> = vec![
        (
            Call::HoldLock { owner: "o" },
            vec!["hold-lock".into(), "o".into()],
        ),
        (
            Call::Receive {
                owner: "o",
                dictionary: &dictionary,
            },
            vec![
                "receive".into(),
                "o".into(),
                dictionary[0].to_string(),
                dictionary[1].to_string(),
            ],
        ),
        (
            Call::Secrets {
                owner: "o",
                secrets: vec![("db", "postgres"), ("k", "root")],
            },
            vec![
                "secrets".into(),
                "o".into(),
                "db=postgres".into(),
                "k=root".into(),
            ],
        ),
        (
            Call::Backup {
                owner: "o",
                paths: &paths,
            },
            vec![
                "backup".into(),
                "o".into(),
                "/srv/a".into(),
                "/srv/b".into(),
            ],
        ),
        (
            Call::Restore {
                owner: "o",
                generation: 4,
                paths: &paths,
            },
            vec![
                "restore".into(),
                "o".into(),
                "4".into(),
                "/srv/a".into(),
                "/srv/b".into(),
            ],
        ),
        (
            Call::RestorePart { owner: "o" },
            vec!["restore-part".into(), "o".into()],
        ),
        (
            Call::Relabel {
                owner: "o",
                generation: 7,
                manifest: &m,
            },
            vec!["relabel".into(), "o".into(), "7".into(), m.to_string()],
        ),
        (
            Call::Switch {
                owner: "o",
                generation: 7,
                manifest: &m,
                confirm_within: Duration::from_millis(300),
                agent: &a,
            },
            vec![
                "switch".into(),
                "o".into(),
                "7".into(),
                m.to_string(),
                "1".into(),
                a.to_string(),
            ],
        ),
        (
            Call::Confirm { generation: 7 },
            vec!["confirm".into(), "7".into()],
        ),
        (
            Call::Rollback {
                generation: 7,
                previous: Some(6),
            },
            vec!["rollback".into(), "7".into(), "6".into()],
        ),
        (
            Call::Rollback {
                generation: 1,
                previous: None,
            },
            vec!["rollback".into(), "1".into(), String::new()],
        ),
    ];
    for (call, want) in cases {
        let argv = tail(&call);
        assert_eq!(argv[2], want[0], "{call:?}");
        assert_eq!(argv[3], "/var/lib/sov", "{call:?}");
        assert_eq!(argv[4..], want[1..], "{call:?}");
        assert!(
            AGENT.contains(&format!("\n{})\n", call.command())),
            "agent.sh has no case for {}",
            call.command()
        );
    }
}

#[test]
fn exit_statuses_match_the_shell_side() {
    assert!(AGENT.contains("\n\t\t\texit 75\n"));
    assert!(PROBE.contains("exit 97;"));
    assert!(AgentExit::from_code(Some(75)).is_locked_by_another());
    assert!(AgentExit::from_code(Some(97)).is_not_stored());
    assert_eq!(AgentExit::from_code(Some(0)), AgentExit::Success);
    assert_eq!(AgentExit::from_code(Some(1)), AgentExit::Failed(1));
    assert_eq!(AgentExit::from_code(None), AgentExit::Signal);
    assert!(!AgentExit::from_code(Some(1)).is_not_stored());
    assert_eq!(lock_holder("locked by sov deploy 7"), "sov deploy 7");
}

#[test]
fn lines_to_a_running_agent_are_the_ones_it_matches() {
    let a = object("sov-agent.sh");
    assert_eq!(
        Tell::Gc { keep: 5, agent: &a }.to_string(),
        format!("gc 5 {a}")
    );
    assert!(AGENT.contains("case $line in 'gc '*)"));
    assert_eq!(Tell::Ok.to_string(), "ok");
    assert!(AGENT.contains(r#"[ "$verdict" != ok ]"#));
    assert_eq!(Tell::Abort.to_string(), "abort");
    assert!(AGENT.contains(&format!("\techo {END}\n")));
}

#[test]
fn state_lines_parse_into_the_host_state() {
    let lines = "current 7\nconfirmed yes\npending 8 7\nmanifest m.json\nobject a\nobject b\nsecret db 1234";
    let state = HostState::parse(lines.lines()).unwrap();
    assert_eq!(state.current, Some(7));
    assert!(state.confirmed);
    assert_eq!(state.pending, Some((8, Some(7))));
    assert_eq!(state.manifest.as_deref(), Some("m.json"));
    assert_eq!(state.objects.len(), 2);
    assert_eq!(state.secrets["db"], "1234");
}

#[test]
fn a_fresh_host_has_no_generation_and_no_manifest() {
    let state = HostState::parse(["current ", "confirmed no", "manifest ", "pending 3 "]).unwrap();
    assert_eq!(state.current, None);
    assert_eq!(state.manifest, None);
    assert!(!state.confirmed);
    assert_eq!(state.pending, Some((3, None)));
}

#[test]
fn malformed_state_lines_are_errors() {
    for line in [
        "current seven",
        "confirmed maybe",
        "pending x 1",
        "pending 2 y",
        "secret db",
        "secret ",
        "object",
        "locked",
        "something else",
        "current 99999999999999999999999",
    ] {
        let got = HostState::parse([line]);
        assert!(
            matches!(got, Err(ReplyError::Malformed { line: ref l, .. }) if l == line),
            "{line:?}: {got:?}"
        );
    }
}

#[test]
fn the_lock_reply_starts_with_locked() {
    let lines: Vec<String> = ["locked", "current 2", "confirmed yes"]
        .map(String::from)
        .to_vec();
    assert_eq!(HostState::parse_locked(&lines).unwrap().current, Some(2));
    assert_eq!(
        HostState::parse_locked(&lines[1..]),
        Err(ReplyError::Missing { expected: "locked" })
    );
    assert!(HostState::parse_locked(&[]).is_err());
}
