# %preun for agentos ($1: 0 = erase, 1 = upgrade): stop and disable on erase.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop agentosd.service >/dev/null 2>&1 || :
    fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable agentosd.service >/dev/null 2>&1 || :
    fi
fi
exit 0
