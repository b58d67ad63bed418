//! `cargo xtask deb`: the Debian packages, built with `dpkg-deb --build`
//! from staging trees this task lays out under `target/deb/`.
//!
//! - `storage-domain-guest`: `/usr/bin/guest-driver`, the mount helper
//!   `/sbin/mount.guest-driver` (a link: guest-driver acts as the helper
//!   when called by that name), the template unit
//!   `guest-driver@.service`, its example configuration and the guide.
//! - `storage-domain-dom0`: the PV kernel at
//!   `/usr/lib/storage-domain/storage-domain-xen` (where
//!   `xen-cfg/storage-domain.cfg` names it), `storage-domain-hosted` (the
//!   image tools) and `storage-domain-ctl` (attach) in `/usr/sbin`, the xl
//!   configuration as the conffile `/etc/xen/storage-domain.cfg`, and
//!   `/var/lib/storage-domain/` for the disk image.
//!
//! Why `dpkg-deb` and not a cargo plugin: it is Debian's own tool (in
//! `dpkg`, on every Debian machine and CI runner already), so nothing more
//! is compiled or installed to build packages, and one of the two packages
//! ships a bare-metal kernel built for another target from its own
//! directory, which a per-crate packager does not describe.

use crate::process::{cargo, execute};
use anyhow::{bail, Context};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Package {
    /// storage-domain-guest: guest-driver, the mount helper, the unit.
    Guest,
    /// storage-domain-dom0: the PV kernel, the image tools, the attach
    /// command, the xl configuration.
    Dom0,
}

impl Package {
    /// The Debian package name.
    pub fn name(self) -> &'static str {
        match self {
            Package::Guest => "storage-domain-guest",
            Package::Dom0 => "storage-domain-dom0",
        }
    }
}

/// Arguments of `cargo xtask deb`.
#[derive(Debug, clap::Args)]
pub struct DebArgs {
    /// The packages to build (repeatable) [default: both].
    #[arg(long = "package", value_enum)]
    pub packages: Vec<Package>,
}

/// The Debian version of the workspace's version.
fn version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// The architecture dpkg installs for on this machine.
fn architecture() -> anyhow::Result<String> {
    let output = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("cannot run dpkg (is this a Debian machine?)")?;
    if !output.status.success() {
        bail!("dpkg --print-architecture failed");
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Build `packages` (both when empty); returns the `.deb` files.
///
/// # Errors
/// A failed build, a missing tool (dpkg-deb, objcopy) or file.
pub fn run(args: DebArgs) -> anyhow::Result<Vec<PathBuf>> {
    let packages = if args.packages.is_empty() {
        vec![Package::Guest, Package::Dom0]
    } else {
        args.packages
    };
    let root = crate::workspace_root();
    let target = crate::target_dir();
    let architecture = architecture()?;
    let mut built = Vec::new();
    for package in packages {
        build_binaries(package, &root)?;
        let staging = target.join("deb").join(package.name());
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot clear {}", staging.display()))?;
        }
        let stage = Stage {
            root: &staging,
            source: &root,
            release: target.join("release"),
        };
        let control = match package {
            Package::Guest => stage.guest()?,
            Package::Dom0 => stage.dom0(&target)?,
        };
        let installed_kib = directory_bytes(&staging)?.div_ceil(1024);
        stage.write(
            "DEBIAN/control",
            &format!(
                "Package: {}\nVersion: {}\nArchitecture: {architecture}\n\
                 Maintainer: xen-storage-domain developers <root@localhost>\n\
                 Installed-Size: {installed_kib}\nSection: admin\nPriority: optional\n{control}",
                package.name(),
                version()
            ),
            0o644,
        )?;
        let deb = target.join("deb").join(format!(
            "{}_{}_{architecture}.deb",
            package.name(),
            version()
        ));
        execute(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "--build"])
                .arg(&staging)
                .arg(&deb),
        )
        .context("dpkg-deb (package dpkg) builds the package")?;
        eprintln!("built {}", deb.display());
        built.push(deb);
    }
    Ok(built)
}

/// The release builds a package ships.
fn build_binaries(package: Package, root: &Path) -> anyhow::Result<()> {
    match package {
        Package::Guest => execute(cargo().args(["build", "--release", "-p", "guest-driver"])),
        Package::Dom0 => {
            execute(cargo().args([
                "build",
                "--release",
                "-p",
                "storage-domain-hosted",
                "-p",
                "storage-domain-ctl",
            ]))?;
            // From its directory, so its .cargo/config.toml applies.
            execute(cargo().current_dir(root.join("storage-domain/xen")).args([
                "build",
                "--release",
                "--target",
                "x86_64-unknown-none",
            ]))
        }
    }
}

/// A staging tree being laid out.
struct Stage<'a> {
    root: &'a Path,
    source: &'a Path,
    release: PathBuf,
}

impl Stage<'_> {
    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    fn write(&self, inside: &str, text: &str, mode: u32) -> anyhow::Result<()> {
        let path = self.path(inside);
        make_parent(&path)?;
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Copy a file of the repository.
    fn copy(&self, from: &str, inside: &str, mode: u32) -> anyhow::Result<()> {
        let from = self.source.join(from);
        let text =
            fs::read_to_string(&from).with_context(|| format!("cannot read {}", from.display()))?;
        self.write(inside, &text, mode)
    }

    /// Install a binary without its debug information (the release
    /// profile keeps line tables for backtraces; a package does not).
    fn binary(&self, from: &Path, inside: &str) -> anyhow::Result<()> {
        let path = self.path(inside);
        make_parent(&path)?;
        execute(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(from)
                .arg(&path),
        )
        .context("objcopy (package binutils) strips the binaries")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    fn directory(&self, inside: &str) -> anyhow::Result<()> {
        let path = self.path(inside);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// The guest package's files; returns the rest of its control file.
    fn guest(&self) -> anyhow::Result<String> {
        self.binary(&self.release.join("guest-driver"), "/usr/bin/guest-driver")?;
        let helper = self.path("/sbin/mount.guest-driver");
        make_parent(&helper)?;
        symlink("/usr/bin/guest-driver", &helper)?;
        self.copy(
            "packaging/guest-driver@.service",
            "/lib/systemd/system/guest-driver@.service",
            0o644,
        )?;
        self.directory("/etc/guest-driver")?;
        let doc = "/usr/share/doc/storage-domain-guest";
        self.copy("packaging/copyright", &format!("{doc}/copyright"), 0o644)?;
        self.copy(
            "packaging/example.conf",
            &format!("{doc}/example.conf"),
            0o644,
        )?;
        self.copy("README.md", &format!("{doc}/README.md"), 0o644)?;
        self.copy(
            "docs/guest-driver.md",
            &format!("{doc}/guest-driver.md"),
            0o644,
        )?;
        self.copy("docs/operations.md", &format!("{doc}/operations.md"), 0o644)?;
        Ok("Depends: fuse3, libc6\n\
            Description: guest side of the Xen storage domain: guest-driver and mount helper\n \
            guest-driver mounts an export of the storage domain through FUSE, over\n \
            VRPC shared-memory rings with the shared metadata table (Xen or hosted)\n \
            or plain NFSv3 over TCP. The mount helper mount.guest-driver lets\n \
            mount -t guest-driver and /etc/fstab use it; guest-driver@.service\n \
            runs one mount as a service.\n"
            .to_owned())
    }

    /// The dom0 package's files; returns the rest of its control file.
    fn dom0(&self, target: &Path) -> anyhow::Result<String> {
        let kernel = target.join("x86_64-unknown-none/release/storage-domain-xen");
        self.binary(&kernel, "/usr/lib/storage-domain/storage-domain-xen")?;
        // A kernel image, not a program: not executable.
        fs::set_permissions(
            self.path("/usr/lib/storage-domain/storage-domain-xen"),
            fs::Permissions::from_mode(0o644),
        )?;
        self.binary(
            &self.release.join("storage-domain-hosted"),
            "/usr/sbin/storage-domain-hosted",
        )?;
        self.binary(
            &self.release.join("storage-domain-ctl"),
            "/usr/sbin/storage-domain-ctl",
        )?;
        self.copy(
            "xen-cfg/storage-domain.cfg",
            "/etc/xen/storage-domain.cfg",
            0o644,
        )?;
        self.write("DEBIAN/conffiles", "/etc/xen/storage-domain.cfg\n", 0o644)?;
        self.directory("/var/lib/storage-domain")?;
        let doc = "/usr/share/doc/storage-domain-dom0";
        self.copy("packaging/copyright", &format!("{doc}/copyright"), 0o644)?;
        self.copy("README.md", &format!("{doc}/README.md"), 0o644)?;
        self.copy("docs/operations.md", &format!("{doc}/operations.md"), 0o644)?;
        self.copy("docs/xen.md", &format!("{doc}/xen.md"), 0o644)?;
        self.copy("docs/xenstore.md", &format!("{doc}/xenstore.md"), 0o644)?;
        Ok("Depends: libc6\n\
            Recommends: xen-utils-common\n\
            Description: dom0 side of the Xen storage domain: kernel, image tools, attach command\n \
            The storage domain is a Rust PV unikernel serving one disk to the\n \
            guests of a Xen host as NFSv3, over VRPC shared-memory rings with a\n \
            shared metadata table and over TCP. This package holds its kernel,\n \
            the xl configuration (/etc/xen/storage-domain.cfg), the image tools\n \
            (storage-domain-hosted: mkfs, fsck, ls, get, snapshots; also the\n \
            hosted server) and storage-domain-ctl, which attaches guests.\n"
            .to_owned())
    }
}

fn make_parent(path: &Path) -> anyhow::Result<()> {
    let mut directory = PathBuf::new();
    for component in path.parent().into_iter().flat_map(Path::components) {
        directory.push(component);
        if !directory.exists() {
            fs::create_dir(&directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
            fs::set_permissions(&directory, fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Bytes of the regular files below `path` (links count nothing).
fn directory_bytes(path: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += directory_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}
