//! The xenstore nodes of an attachment, as pure functions (no xenstore).
//!
//! Layout (`docs/xenstore.md`): the frontend directory
//! `/local/domain/<guest>/device/vrpc/<n>` belongs to the guest and the
//! storage domain may read it; the backend directory
//! `/local/domain/<sd>/backend/vrpc/<guest>/<n>` belongs to the storage
//! domain and the guest may read it. Nobody else may read either, so a guest
//! sees and changes only its own frontend keys.

use vrpc::xenstore::{BACKEND_DIRECTORY, EXPORT, FRONTEND_DIRECTORY, STATE};
use xen_abi::xenbus::XenbusState;
use xen_linux::{Access, Permission};

/// Frontend key: the backend directory's full path (xenbus convention).
pub const BACKEND: &str = "backend";
/// Frontend key: the storage domain's id.
pub const BACKEND_ID: &str = "backend-id";
/// Backend key: the frontend directory's full path.
pub const FRONTEND: &str = "frontend";
/// Backend key: the guest's id.
pub const FRONTEND_ID: &str = "frontend-id";

/// Longest export path accepted (the hosted handshake's limit too).
pub const MAX_EXPORT_BYTES: usize = 1024;

/// One guest device to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The client domain.
    pub guest: u16,
    /// The storage domain (the backend).
    pub storage_domain: u16,
    /// The device number under `device/vrpc`.
    pub device: u32,
    /// The export the guest may mount.
    pub export: String,
}

/// One node to create and the permissions to give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeWrite {
    /// Absolute path.
    pub path: String,
    /// `None`: a directory (`XS_MKDIR`); `Some`: a key and its value.
    pub value: Option<String>,
    /// Owner (with everyone else's access) first, then grants.
    pub permissions: Vec<Permission>,
}

/// `/local/domain/<guest>/device/vrpc`.
pub fn frontend_root(guest: u16) -> String {
    format!("/local/domain/{guest}/{FRONTEND_DIRECTORY}")
}

/// `/local/domain/<guest>/device/vrpc/<device>`.
pub fn frontend_path(guest: u16, device: u32) -> String {
    format!("{}/{device}", frontend_root(guest))
}

/// `/local/domain/<sd>/backend/vrpc`.
pub fn backend_root(storage_domain: u16) -> String {
    format!("/local/domain/{storage_domain}/{BACKEND_DIRECTORY}")
}

/// `/local/domain/<sd>/backend/vrpc/<guest>`.
pub fn backend_guest_path(storage_domain: u16, guest: u16) -> String {
    format!("{}/{guest}", backend_root(storage_domain))
}

/// `/local/domain/<sd>/backend/vrpc/<guest>/<device>`.
pub fn backend_path(storage_domain: u16, guest: u16, device: u32) -> String {
    format!("{}/{device}", backend_guest_path(storage_domain, guest))
}

fn owned_by(owner: u16, reader: Option<u16>) -> Vec<Permission> {
    let mut permissions = vec![Permission {
        domain: owner,
        access: Access::None,
    }];
    if let Some(reader) = reader.filter(|&reader| reader != owner) {
        permissions.push(Permission {
            domain: reader,
            access: Access::Read,
        });
    }
    permissions
}

/// Every node `attach` creates, parents before children, in the order to
/// write them, all in one transaction.
pub fn attach_plan(attachment: &Attachment) -> Vec<NodeWrite> {
    let Attachment {
        guest,
        storage_domain,
        device,
        ref export,
    } = *attachment;
    let frontend = frontend_path(guest, device);
    let backend = backend_path(storage_domain, guest, device);
    let initialising = XenbusState::Initialising.number().to_string();
    // The guest owns its side; the storage domain may read it.
    let frontend_permissions = owned_by(guest, Some(storage_domain));
    // The storage domain owns its side; the guest may read its own device.
    let backend_permissions = owned_by(storage_domain, Some(guest));
    // Nobody but the storage domain may list which guests it serves.
    let backend_private = owned_by(storage_domain, None);

    let directory = |path: String, permissions: &Vec<Permission>| NodeWrite {
        path,
        value: None,
        permissions: permissions.clone(),
    };
    let key =
        |directory: &str, name: &str, value: String, permissions: &Vec<Permission>| NodeWrite {
            path: format!("{directory}/{name}"),
            value: Some(value),
            permissions: permissions.clone(),
        };
    vec![
        directory(
            format!("/local/domain/{storage_domain}/backend"),
            &backend_private,
        ),
        directory(backend_root(storage_domain), &backend_private),
        directory(
            backend_guest_path(storage_domain, guest),
            &backend_permissions,
        ),
        directory(backend.clone(), &backend_permissions),
        key(&backend, FRONTEND, frontend.clone(), &backend_permissions),
        key(
            &backend,
            FRONTEND_ID,
            guest.to_string(),
            &backend_permissions,
        ),
        key(&backend, EXPORT, export.clone(), &backend_permissions),
        key(&backend, STATE, initialising.clone(), &backend_permissions),
        directory(frontend_root(guest), &frontend_permissions),
        directory(frontend.clone(), &frontend_permissions),
        key(&frontend, BACKEND, backend, &frontend_permissions),
        key(
            &frontend,
            BACKEND_ID,
            storage_domain.to_string(),
            &frontend_permissions,
        ),
        key(&frontend, EXPORT, export.clone(), &frontend_permissions),
        key(&frontend, STATE, initialising, &frontend_permissions),
    ]
}

/// The smallest device number in neither list (names that are not numbers
/// are ignored).
pub fn first_free_device<'a>(used: impl IntoIterator<Item = &'a str>) -> u32 {
    let mut taken: Vec<u32> = used
        .into_iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    taken.sort_unstable();
    taken.dedup();
    let mut candidate = 0;
    for number in taken {
        if number != candidate {
            break;
        }
        candidate += 1;
    }
    candidate
}

/// Why an export path is refused, if it is.
pub fn check_export(export: &str) -> Result<(), String> {
    if !export.starts_with('/') {
        return Err(format!("export {export:?} is not an absolute path"));
    }
    if export.len() > MAX_EXPORT_BYTES {
        return Err(format!("export path longer than {MAX_EXPORT_BYTES} bytes"));
    }
    if export.contains('\0') {
        return Err("export path contains a NUL byte".to_owned());
    }
    Ok(())
}

/// A `state` value for people: the XenbusState name, `-` when absent.
pub fn state_name(value: Option<&str>) -> String {
    match value {
        None => "-".to_owned(),
        Some(text) => match XenbusState::parse(text.as_bytes()) {
            Some(state) => format!("{state:?}"),
            None => format!("invalid({text:?})"),
        },
    }
}

/// Whether a frontend in this state holds nothing the storage domain could
/// still be using: it never connected (`Initialising`, `Unknown`), or
/// closed (`Closed`), or its directory is gone (`None`).
pub fn frontend_let_go(value: Option<&str>) -> bool {
    match value.map(|text| XenbusState::parse(text.as_bytes())) {
        None => true,
        Some(None) => false,
        Some(Some(state)) => match state {
            XenbusState::Unknown | XenbusState::Initialising | XenbusState::Closed => true,
            XenbusState::InitWait
            | XenbusState::Initialised
            | XenbusState::Connected
            | XenbusState::Closing
            | XenbusState::Reconfiguring
            | XenbusState::Reconfigured => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(domain: u16, access: Access) -> Permission {
        Permission { domain, access }
    }

    #[test]
    fn attach_plan_creates_both_directories_with_their_owners() {
        let plan = attach_plan(&Attachment {
            guest: 5,
            storage_domain: 2,
            device: 0,
            export: "/data".into(),
        });
        let front = vec![permission(5, Access::None), permission(2, Access::Read)];
        let back = vec![permission(2, Access::None), permission(5, Access::Read)];
        let private = vec![permission(2, Access::None)];
        let expected: Vec<(&str, Option<&str>, &Vec<Permission>)> = vec![
            ("/local/domain/2/backend", None, &private),
            ("/local/domain/2/backend/vrpc", None, &private),
            ("/local/domain/2/backend/vrpc/5", None, &back),
            ("/local/domain/2/backend/vrpc/5/0", None, &back),
            (
                "/local/domain/2/backend/vrpc/5/0/frontend",
                Some("/local/domain/5/device/vrpc/0"),
                &back,
            ),
            (
                "/local/domain/2/backend/vrpc/5/0/frontend-id",
                Some("5"),
                &back,
            ),
            (
                "/local/domain/2/backend/vrpc/5/0/export",
                Some("/data"),
                &back,
            ),
            ("/local/domain/2/backend/vrpc/5/0/state", Some("1"), &back),
            ("/local/domain/5/device/vrpc", None, &front),
            ("/local/domain/5/device/vrpc/0", None, &front),
            (
                "/local/domain/5/device/vrpc/0/backend",
                Some("/local/domain/2/backend/vrpc/5/0"),
                &front,
            ),
            (
                "/local/domain/5/device/vrpc/0/backend-id",
                Some("2"),
                &front,
            ),
            (
                "/local/domain/5/device/vrpc/0/export",
                Some("/data"),
                &front,
            ),
            ("/local/domain/5/device/vrpc/0/state", Some("1"), &front),
        ];
        assert_eq!(plan.len(), expected.len());
        for (write, (path, value, permissions)) in plan.iter().zip(expected) {
            assert_eq!(write.path, path);
            assert_eq!(write.value.as_deref(), value, "{path}");
            assert_eq!(&write.permissions, permissions, "{path}");
        }
    }

    #[test]
    fn dom0_as_guest_and_wire_form_of_permissions() {
        let plan = attach_plan(&Attachment {
            guest: 0,
            storage_domain: 1,
            device: 3,
            export: "/".into(),
        });
        let frontend = plan
            .iter()
            .find(|write| write.path == "/local/domain/0/device/vrpc/3")
            .unwrap();
        let text: Vec<String> = frontend
            .permissions
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text, ["n0", "r1"]);
        let backend = plan
            .iter()
            .find(|write| write.path == "/local/domain/1/backend/vrpc/0/3")
            .unwrap();
        let text: Vec<String> = backend
            .permissions
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text, ["n1", "r0"]);
        // Every node of the plan gets permissions, parents come first.
        for (index, write) in plan.iter().enumerate() {
            assert!(!write.permissions.is_empty());
            if let Some((parent, _)) = write.path.rsplit_once('/') {
                if let Some(parent_index) = plan.iter().position(|other| other.path == parent) {
                    assert!(parent_index < index, "{} before its parent", write.path);
                }
            }
        }
    }

    #[test]
    fn first_free_device_skips_used_numbers() {
        assert_eq!(first_free_device([]), 0);
        assert_eq!(first_free_device(["0", "1", "3"]), 2);
        assert_eq!(first_free_device(["1", "1", "x", "0"]), 2);
        assert_eq!(first_free_device(["2"]), 0);
    }

    #[test]
    fn exports_are_checked() {
        assert!(check_export("/").is_ok());
        assert!(check_export("/data/sub").is_ok());
        assert!(check_export("data").is_err());
        assert!(check_export("").is_err());
        assert!(check_export("/a\0b").is_err());
        assert!(check_export(&format!("/{}", "a".repeat(1024))).is_err());
    }

    #[test]
    fn states_for_people_and_for_detach() {
        assert_eq!(state_name(None), "-");
        assert_eq!(state_name(Some("4")), "Connected");
        assert_eq!(state_name(Some("x")), "invalid(\"x\")");
        assert!(frontend_let_go(None));
        assert!(frontend_let_go(Some("1")));
        assert!(frontend_let_go(Some("6")));
        assert!(!frontend_let_go(Some("4")));
        assert!(!frontend_let_go(Some("5")));
        assert!(!frontend_let_go(Some("junk")));
    }
}
