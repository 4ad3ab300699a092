//! `sov diff`: per host and for the site, which artifacts changed between
//! two generations, with unified diffs of the text inside them.

mod common;

use common::{stderr, stdout, Stack};

#[test]
fn diff_names_the_changed_artifacts_and_shows_their_lines() {
    let stack = Stack::example();
    stack.build_json();
    let site = stack.read("sites/fra1.toml");
    stack.write(
        "sites/fra1.toml",
        &format!("{site}\n[[records]]\nzone = \"internal\"\nname = \"printer2\"\ntype = \"A\"\nvalue = \"10.10.40.11\"\n"),
    );
    stack.build_json();
    let out = stack.sov(&["diff", "fra1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("changed  dns        fra1-zone-fra1.example.internal"),
        "{text}"
    );
    assert!(
        text.contains("host ns1:"),
        "the DNS server carries the zone: {text}"
    );
    assert!(text.contains("+printer2\tIN\tA\t10.10.40.11"), "{text}");
    assert!(!text.contains("host www:"), "www did not change: {text}");

    let same = stack.sov(&["diff", "fra1", "--from", "2", "--to", "2"]);
    assert!(
        stdout(&same).contains("same artifacts"),
        "{}",
        stdout(&same)
    );
    let missing = stack.sov(&["diff", "fra1", "--from", "9"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no generation 9"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn diff_looks_inside_bundles_and_seed_images() {
    let stack = Stack::example();
    stack.build_json();
    let caddyfile = "templates/compose/files/caddy/Caddyfile.j2";
    let text = stack.read(caddyfile);
    stack.write(caddyfile, &format!("{text}# served by sov\n"));
    let settings = stack.read("sites/stack.toml");
    stack.write(
        "sites/stack.toml",
        &format!("{settings}\n[[operators]]\nname = \"carol\"\nssh_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzD9J5UrJC7KIbiQ1pJlfnxtccwQ75TsKa1fepLnrhV carol\"\n"),
    );
    stack.build_json();
    let text = stdout(&stack.sov(&["diff", "fra1"]));
    assert!(
        text.contains("+++ fra1-www-bundle.tar.zst/caddy/Caddyfile"),
        "{text}"
    );
    assert!(text.contains("+# served by sov"), "{text}");
    assert!(text.contains("+++ fra1-www-seed.img/user-data"), "{text}");
    assert!(text.contains("carol"), "{text}");
}
