//! Health figures for heartbeats, sampled with `sysinfo`.

use std::path::{Path, PathBuf};

use sysinfo::{Disks, System};

use crate::wire::Health;

/// Samples CPU, memory and the free space of the disk holding the data dir.
pub struct HealthSampler {
    sys: System,
    disks: Disks,
    data_dir: PathBuf,
}

impl HealthSampler {
    pub fn new(data_dir: &Path) -> Self {
        let data_dir = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_owned());
        HealthSampler {
            sys: System::new(),
            disks: Disks::new_with_refreshed_list(),
            data_dir,
        }
    }

    /// A fresh sample. CPU use is measured since the previous call.
    pub fn sample(&mut self) -> Health {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        let disk = self
            .disks
            .list()
            .iter()
            .filter(|d| self.data_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        Health {
            cpu_permille: (self.sys.global_cpu_usage().clamp(0.0, 100.0) * 10.0) as u16,
            mem_used: self.sys.used_memory(),
            mem_total: self.sys.total_memory(),
            disk_free: disk.map_or(0, |d| d.available_space()),
            disk_total: disk.map_or(0, |d| d.total_space()),
        }
    }
}

/// The machine's NVIDIA GPUs, read through NVML (`libnvidia-ml.so.1`,
/// loaded at run time): none, without an error, where the library or the
/// driver is missing.
pub fn gpus() -> Vec<crate::wire::Gpu> {
    use crate::wire::{Gpu, MAX_GPU_MODEL, MAX_GPUS};
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        return Vec::new();
    };
    let n = nvml.device_count().unwrap_or(0).min(MAX_GPUS as u32);
    (0..n)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let mut model = d.name().ok()?;
            while model.len() > MAX_GPU_MODEL {
                model.pop();
            }
            Some(Gpu {
                model,
                memory: d.memory_info().ok()?.total,
            })
        })
        .collect()
}

/// Hands memory the allocator holds free back to the system. glibc keeps
/// what a burst of short-lived allocations freed (a leader reading a
/// million changes to plan from them) in its per-thread arenas, where it
/// shows as resident memory for good; this is cheap (a walk of the free
/// lists) and a no-op elsewhere.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reads and updates the allocator's own state
    // under its locks; any argument is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_real_figures() {
        let dir = tempfile::tempdir().unwrap();
        let h = HealthSampler::new(dir.path()).sample();
        assert!(h.mem_total > 0 && h.mem_used <= h.mem_total);
        assert!(h.disk_total > 0 && h.disk_free <= h.disk_total, "{h:?}");
    }
}
