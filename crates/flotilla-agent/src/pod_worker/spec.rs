//! From the Pod's spec to what the runtime is asked for: the sandbox, each
//! container (with the Downward API resolved) and its probes.

use super::*;

impl PodWorker {
    pub(super) fn sandbox_spec(&self) -> Result<SandboxSpec, String> {
        let spec = &self.pod.spec;
        let mut volumes = Vec::new();
        for v in &spec.volumes {
            let source = if let Some(h) = &v.host_path {
                VolumeSource::HostPath {
                    path: h.path.clone().into(),
                }
            } else if let Some(cm) = &v.config_map {
                let mut files = BTreeMap::new();
                match self.config_maps.get(&cm.name) {
                    None if cm.optional => {}
                    None => {
                        return Err(format!(
                            "MountVolume.SetUp failed for volume {:?}: configmap {:?} not found",
                            v.name, cm.name
                        ));
                    }
                    Some(data) if cm.items.is_empty() => files = data.clone(),
                    Some(data) => {
                        for item in &cm.items {
                            match data.get(&item.key) {
                                Some(value) => {
                                    files.insert(item.path.clone(), value.clone());
                                }
                                None if cm.optional => {}
                                None => {
                                    return Err(format!(
                                        "MountVolume.SetUp failed for volume {:?}: configmap {:?} has no key {:?}",
                                        v.name, cm.name, item.key
                                    ));
                                }
                            }
                        }
                    }
                }
                VolumeSource::Files { files }
            } else {
                VolumeSource::EmptyDir
            };
            volumes.push(VolumeSpec {
                name: v.name.clone(),
                source,
            });
        }
        let host_ports = spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                Some((
                    u16::try_from(p.container_port).ok()?,
                    u16::try_from(p.host_port?).ok()?,
                ))
            })
            .collect();
        let m = &self.pod.metadata;
        Ok(SandboxSpec {
            pod_uid: m.uid.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            hostname: if spec.hostname.is_empty() {
                m.name.clone()
            } else {
                spec.hostname.clone()
            },
            volumes,
            host_ports,
            share_process_namespace: spec.share_process_namespace,
        })
    }
}

pub(super) fn container_spec(c: &Container, pod: &Pod) -> ContainerSpec {
    ContainerSpec {
        name: c.name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c
            .env
            .iter()
            .map(|e| (e.name.clone(), env_value(e, pod)))
            .collect(),
        working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
        mounts: c
            .volume_mounts
            .iter()
            .map(|m| MountSpec {
                volume: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
            })
            .collect(),
        memory_limit_bytes: c
            .resources
            .limits
            .get("memory")
            .and_then(|q| q.bytes().ok()),
        cpu_limit_millis: c.resources.limits.get("cpu").and_then(|q| q.millis().ok()),
    }
}

/// A variable's literal value, or the Pod field its `fieldRef` names.
/// Validation refused unknown field paths at admission; one that still
/// fails to parse here gives the empty value, as a missing label does.
pub(super) fn env_value(e: &EnvVar, pod: &Pod) -> String {
    let field = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref());
    match field {
        Some(r) => PodField::parse(&r.field_path)
            .map(|f| pod.field(&f))
            .unwrap_or_default(),
        None => e.value.clone(),
    }
}

pub(super) fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|p| p.name == *name)
            .map(|p| p.container_port)
            .ok_or_else(|| format!("container {} has no port named {name:?}", c.name))?,
    };
    u16::try_from(number).map_err(|_| format!("port {number} is out of range"))
}

pub(super) fn probe_check(c: &Container, probe: &Probe) -> Result<ProbeCheck, String> {
    if let Some(exec) = &probe.exec {
        return Ok(ProbeCheck::Exec(exec.command.clone()));
    }
    if let Some(http) = &probe.http_get {
        let path = if http.path.is_empty() {
            "/".to_string()
        } else {
            http.path.clone()
        };
        return Ok(ProbeCheck::Network(NetworkCheck::Http {
            port: resolve_port(c, &http.port)?,
            path,
        }));
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(ProbeCheck::Network(NetworkCheck::Tcp {
            port: resolve_port(c, &tcp.port)?,
        }));
    }
    Err("probe has no exec, httpGet or tcpSocket handler".into())
}
