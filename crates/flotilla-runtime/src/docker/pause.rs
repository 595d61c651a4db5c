//! The pause program: what a sandbox's pause container runs to hold the
//! Pod's network and IPC namespaces while its containers come and go.
//!
//! No registry may be reachable, so its image is built on the engine from
//! a tarball made here: a Dockerfile and a static ELF executable written
//! byte by byte below. The program needs no libc and blocks in the kernel
//! forever, so the image is `FROM scratch` with one file.

use std::io;

/// Where the program is loaded: the usual base of static executables, far
/// above `vm.mmap_min_addr`, and aligned to any page size (4 to 64 KiB).
const LOAD_ADDRESS: u64 = 0x40_0000;
const ELF_HEADER_BYTES: u16 = 64;
const PROGRAM_HEADER_BYTES: u16 = 56;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// The ELF machine and the code for an architecture as the engine names
/// it (`uname -m`, or Go's name), or `None` for one not written here.
fn code(arch: &str) -> Option<(u16, Vec<u8>)> {
    match arch {
        "x86_64" | "amd64" => Some((
            EM_X86_64,
            vec![
                0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34 (SYS_pause)
                0x0f, 0x05, // syscall: sleeps until a signal is handled
                0xeb, 0xf7, // jmp -9: back to the mov, should pause return
            ],
        )),
        "aarch64" | "arm64" => {
            // arm64 has no pause system call: ppoll on no descriptors, with
            // no timeout, sleeps the same way.
            let words: [u32; 7] = [
                0xd280_0000, // movz x0, #0  (fds: none)
                0xd280_0001, // movz x1, #0  (nfds: 0)
                0xd280_0002, // movz x2, #0  (timeout: none, wait forever)
                0xd280_0003, // movz x3, #0  (sigmask: unchanged)
                0xd280_0928, // movz x8, #73 (SYS_ppoll)
                0xd400_0001, // svc #0
                0x17ff_fffa, // b -6 instructions: back to the first movz
            ];
            Some((
                EM_AARCH64,
                words.iter().flat_map(|w| w.to_le_bytes()).collect(),
            ))
        }
        _ => None,
    }
}

/// The pause program for `arch`: an ELF64 little-endian executable made of
/// the ELF header, one program header that loads the whole file readable
/// and executable at [`LOAD_ADDRESS`], and the code right after them,
/// where execution starts. It has no sections: the kernel needs none.
pub(crate) fn program(arch: &str) -> Option<Vec<u8>> {
    let (machine, code) = code(arch)?;
    let headers = u64::from(ELF_HEADER_BYTES + PROGRAM_HEADER_BYTES);
    let file_bytes = headers + code.len() as u64;
    let mut elf = Vec::with_capacity(file_bytes as usize);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI,
    // then padding to 16 bytes.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes()); // e_machine
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(LOAD_ADDRESS + headers).to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(ELF_HEADER_BYTES).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&ELF_HEADER_BYTES.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&PROGRAM_HEADER_BYTES.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: PF_R | PF_X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&file_bytes.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&file_bytes.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    debug_assert_eq!(elf.len() as u64, headers);
    elf.extend_from_slice(&code);
    Some(elf)
}

/// The image's tag for `program`: its content's hash, so a changed
/// program is built anew rather than an old image reused.
pub(crate) fn image_tag(program: &[u8]) -> String {
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let hash = program.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The build context of the pause image: a Dockerfile and the program.
pub(crate) fn build_context(program: &[u8]) -> io::Result<Vec<u8>> {
    let dockerfile = b"FROM scratch\nCOPY pause /pause\nENTRYPOINT [\"/pause\"]\n";
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, data) in [
        ("Dockerfile", 0o644, &dockerfile[..]),
        ("pause", 0o755, program),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        // A fixed time keeps the context, and so the engine's cache, stable.
        header.set_mtime(0);
        tar.append_data(&mut header, path, data)?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_describe_the_file() {
        for arch in ["x86_64", "aarch64"] {
            let elf = program(arch).unwrap();
            let u16_at = |i: usize| u16::from_le_bytes([elf[i], elf[i + 1]]);
            let u64_at = |i: usize| u64::from_le_bytes(elf[i..i + 8].try_into().unwrap());
            assert_eq!(&elf[..4], b"\x7fELF");
            assert_eq!(u16_at(52), ELF_HEADER_BYTES, "{arch}: e_ehsize");
            assert_eq!(
                u64_at(24),
                LOAD_ADDRESS + 120,
                "{arch}: entry after headers"
            );
            assert_eq!(u64_at(64 + 32), elf.len() as u64, "{arch}: p_filesz");
        }
        let arm = program("aarch64").unwrap();
        assert_eq!((arm.len() - 120) % 4, 0, "whole arm64 instructions");
        assert!(program("riscv64").is_none());
        assert_ne!(
            image_tag(&program("x86_64").unwrap()),
            image_tag(&program("aarch64").unwrap())
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_program_runs_until_killed() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, program("x86_64").unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test's fork may hold the file open for writing a moment.
        let mut child = (0..100)
            .find_map(|_| match std::process::Command::new(&path).spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    None
                }
                spawned => Some(spawned.unwrap()),
            })
            .expect("the program can be run");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none(), "it exited or crashed");
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
