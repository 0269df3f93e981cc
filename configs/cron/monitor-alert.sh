#!/bin/sh
# Runs distlb-monitor over the farm; when any machine is down or slow, emails the
# report, naming the bad machines in the subject. Run from cron (distlb-monitor.cron).
#
# Settings, from the environment or /etc/default/distlb-monitor:
#   DISTLB_MONITOR   the command (default: distlb-monitor on PATH)
#   MONITOR_ARGS     where the machines are and the thresholds, e.g.
#                    "--srv farm.example.com --slow-ms 3000" (default: $DISTCC_HOSTS)
#   ALERT_TO         who gets the mail (required to send anything)
#   ALERT_FROM       sender (default: distlb-monitor@<hostname>)
#   SMTP_HOST        send by SMTP to this host; unset: use sendmail(8) if installed
#   SMTP_PORT        (default 25)
#   PYTHON           python3 used for SMTP (default: python3)
set -u
[ -r /etc/default/distlb-monitor ] && . /etc/default/distlb-monitor

DISTLB_MONITOR=${DISTLB_MONITOR:-distlb-monitor}
MONITOR_ARGS=${MONITOR_ARGS:-}
ALERT_TO=${ALERT_TO:-}
ALERT_FROM=${ALERT_FROM:-distlb-monitor@$(hostname)}
SMTP_HOST=${SMTP_HOST:-}
SMTP_PORT=${SMTP_PORT:-25}
PYTHON=${PYTHON:-python3}

# shellcheck disable=SC2086  # MONITOR_ARGS is a list of words on purpose
report=$($DISTLB_MONITOR $MONITOR_ARGS 2>&1)
status=$?
[ "$status" -eq 0 ] && exit 0

subject=$(printf '%s\n' "$report" | grep '^ALERT:' | tail -n 1)
[ -n "$subject" ] || subject="ALERT: distlb-monitor failed with exit status $status"
if [ -z "$ALERT_TO" ]; then
    printf '%s\n%s\n' "$subject" "(ALERT_TO is not set: no mail sent)" >&2
    exit "$status"
fi

if [ -z "$SMTP_HOST" ] && command -v sendmail >/dev/null 2>&1; then
    printf 'From: %s\nTo: %s\nSubject: [distlb] %s\n\n%s\n' \
        "$ALERT_FROM" "$ALERT_TO" "$subject" "$report" | sendmail -t
else
    printf '%s\n' "$report" | "$PYTHON" -c '
import smtplib, sys
from email.message import EmailMessage
host, port, sender, to, subject = sys.argv[1:6]
message = EmailMessage()
message["From"], message["To"], message["Subject"] = sender, to, "[distlb] " + subject
message.set_content(sys.stdin.read())
with smtplib.SMTP(host or "localhost", int(port), timeout=30) as smtp:
    smtp.send_message(message)
' "$SMTP_HOST" "$SMTP_PORT" "$ALERT_FROM" "$ALERT_TO" "$subject"
fi
exit "$status"
