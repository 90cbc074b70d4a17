# %post for agentos ($1: 1 = install, 2 = upgrade): group, directories, unit
# enabled (not started). Every systemctl call is guarded: this must work
# where systemd is not PID 1 (containers, chroots, image builds).
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers agentos.conf || :
fi
if ! getent group agentos >/dev/null 2>&1; then
    groupadd --system agentos || :
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create agentos.conf || :
fi
# kernel.pid_max for thousands of agents (only ever raised; see the file).
if [ -x /usr/lib/systemd/systemd-sysctl ]; then
    /usr/lib/systemd/systemd-sysctl /usr/lib/sysctl.d/60-agentos.conf || :
elif command -v sysctl >/dev/null 2>&1; then
    sysctl -q -p /usr/lib/sysctl.d/60-agentos.conf || :
fi
install -d -m 0711 /var/lib/agentos
install -d -m 0755 /etc/agentos
install -d -m 0700 /etc/agentos/credentials
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # First installation: enabled for the next boot, not started.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl enable agentosd.service >/dev/null 2>&1 || :
    fi
elif [ -d /run/systemd/system ]; then
    systemctl try-restart agentosd.service >/dev/null 2>&1 || :
fi
exit 0
