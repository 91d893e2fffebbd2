//! API tokens over the operator's socket (issue 23, first part): the secret
//! is printed once, listed never, stored only as a hash; bad requests are
//! refused with a reason and store nothing; revocation is at once.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use launchway_integration::Daemon;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn tokens_are_created_listed_without_secrets_refused_when_wrong_and_revoked() {
    let daemon = Daemon::start();
    daemon.project("shop");

    let out = daemon.cli(&[
        "token",
        "create",
        "-p",
        "shop",
        "--role",
        "contributor",
        "--expires",
        "30d",
        "--name",
        "ci",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_owned();
    assert!(secret.starts_with("lw_api_"), "{secret}");
    let said = text(&out.stderr);
    assert!(said.contains("shown only now"), "{said}");
    let id = said.split_whitespace().nth(1).unwrap().to_owned();
    assert!(id.starts_with('T'), "{said}");
    let deploy = daemon.cli_ok(&[
        "token",
        "create",
        "-p",
        "shop",
        "--role",
        "contributor",
        "--deploy-key",
    ]);
    assert!(deploy.trim().starts_with("lw_deploy_"), "{deploy}");

    let listed = daemon.cli_ok(&["token", "list", "-p", "shop"]);
    assert!(
        listed.contains(&id) && listed.contains("deploy key"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "a secret was listed:\n{listed}");
    // Nothing under the data directory holds the secret itself.
    let state = daemon.data_dir().join("state");
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret",
                entry.path().display()
            );
        }
    }

    for (args, why) in [
        (vec!["-p", "nope", "--role", "viewer"], "nope"),
        (vec!["-p", "shop", "--role", "owner"], "not a role"),
        (
            vec!["-p", "shop", "--role", "viewer", "--expires", "30w"],
            "not a lifetime",
        ),
        (
            vec!["-p", "shop", "--role", "viewer", "-e", "ghost"],
            "no environment",
        ),
    ] {
        let mut command = vec!["token", "create"];
        command.extend(args.iter().copied());
        let out = daemon.cli(&command);
        assert!(!out.status.success(), "{command:?} was accepted");
        assert!(
            text(&out.stderr).contains(why),
            "{command:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        daemon.cli_ok(&["token", "list", "-p", "shop"]),
        listed,
        "a refused create stored something"
    );

    daemon.cli_ok(&["token", "revoke", &id]);
    let after = daemon.cli_ok(&["token", "list"]);
    assert!(!after.contains(&id), "{after}");
    let again = daemon.cli(&["token", "revoke", &id]);
    assert!(!again.status.success() && text(&again.stderr).contains("no token"));
}
