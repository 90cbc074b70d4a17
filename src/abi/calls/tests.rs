use super::*;

#[test]
fn names_round_trip() {
    for c in Call::ALL {
        assert_eq!(Call::parse(c.name()), Some(c));
    }
    assert_eq!(Call::parse("NOPE"), None);
}

#[test]
fn groups_and_names_expand() {
    let set = expand_permissions(&["fs".into(), "send_msg".into()]).expect("valid");
    assert!(set.contains(&Call::FS_DELETE));
    assert!(set.contains(&Call::SEND_MSG));
    assert!(!set.contains(&Call::KILL));
    assert!(expand_permissions(&[]).expect("empty").is_empty());
    assert!(expand_permissions(&["root".into()]).is_err());
}

#[test]
fn the_table_is_consistent() {
    for (i, c) in Call::ALL.into_iter().enumerate() {
        let info = c.info();
        assert_eq!(info.call, c);
        assert_eq!(c as usize, i);
        assert_eq!(format!("{c:?}"), info.name);
        assert!(!info.description.is_empty(), "{}", info.name);
        // A call that needs a permission can be granted by a group; the
        // others are granted by name only (or need nothing).
        assert_eq!(
            info.group.is_some(),
            info.access == Access::Granted,
            "{}",
            info.name
        );
        // Inline calls never wait for the disk.
        if info.inline {
            assert_eq!(info.durability, Durability::ReadOnly, "{}", info.name);
        }
        if info.access == Access::PermissionOnly {
            assert!(!info.offered, "{}", info.name);
        }
        assert!((info.schema)().is_object(), "{}", info.name);
        assert!(
            c.check_args(&(info.example)()).is_ok(),
            "example of {}",
            info.name
        );
    }
    for g in Group::ALL {
        assert_eq!(Group::parse(g.name()), Some(g));
        assert!(g.calls().next().is_some(), "group {} is empty", g.name());
    }
}
