# %postun for agentos ($1: 0 = erase, 1 = upgrade). RPM has no purge:
# /var/lib/agentos and /etc/agentos (a modified agentosd.toml is kept as
# .rpmsave) stay; delete them by hand to forget everything.
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0
