//! Shared by `tests/verify.rs` and `tests/compare.rs`: the two `--out` paths every writer of
//! results must refuse (issue 12, defect 4), the refusal each must get, and the check that
//! nothing was written through them. Not the commands: each test runs its own on them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// In a test's dir: a symlink `link` to a directory `victim`, and a regular file `file`.
pub struct BadOuts {
    pub victim: PathBuf,
    pub link: PathBuf,
    pub file: PathBuf,
}

impl BadOuts {
    pub fn new(dir: &Path) -> BadOuts {
        let victim = dir.join("victim");
        std::fs::create_dir(&victim).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, "mine\n").unwrap();
        BadOuts { victim, link, file }
    }

    /// Each bad `--out` with the words its one-line error must contain.
    pub fn cases(&self) -> [(&Path, &'static str); 2] {
        [(&self.link, "is a symlink"), (&self.file, "is not a directory")]
    }

    /// Nothing was written into the symlink's target nor over the file.
    pub fn assert_untouched(&self) {
        assert_eq!(std::fs::read_dir(&self.victim).unwrap().count(), 0);
        assert_eq!(std::fs::read_to_string(&self.file).unwrap(), "mine\n");
    }
}
