# Sentences of the mailboxes pages.
mailboxes-title = Manage user mailboxes
mailboxes-connect-one = Connect a mailbox
mailboxes-connect-many = Connect several
mailboxes-filter = Filter mailboxes
mailboxes-f-address = Email address
mailboxes-f-mailbox = Mailbox name
mailboxes-f-owner = Owner (last name)
mailboxes-f-days = Not synced for (days)
mailboxes-f-crm = In CRM
mailboxes-f-disk-min = Disk space from (MB)
mailboxes-f-disk-max = Disk space to (MB)
mailboxes-f-sender = Sender name
mailboxes-f-access-by = Access by (email)
mailboxes-f-crm-queue = CRM queue (email)
mailboxes-f-advanced = Filter expression
mailboxes-advanced = Advanced filter
mailboxes-advanced-hint = For example: sync_state = AUTH_FAILED OR unread_count > 100. Fields: email, name, sender_name, owner, days_since_sync, in_crm, disk_mb, unread_count, message_count, sync_state, owner_dismissed.
mailboxes-filter-nobody = No one in your organisation has this address.
mailboxes-filter-number = Enter a number of zero or more.
mailboxes-filter-parentheses = Parentheses and quotes must be closed and balanced.
mailboxes-any = Any
mailboxes-yes = Yes
mailboxes-no = No
mailboxes-apply = Apply filter
mailboxes-clear = Clear filter
mailboxes-columns = Columns
mailboxes-columns-legend = Columns to show
mailboxes-columns-save = Save columns
mailboxes-col-employee = Employee
mailboxes-col-email = Email address
mailboxes-col-name = Mailbox name
mailboxes-col-sender-name = Sender name
mailboxes-col-last-sync-time = Last synced
mailboxes-col-sync-state = State
mailboxes-col-unread-count = Unread
mailboxes-col-message-count = Messages
mailboxes-col-disk-mb = Disk space (MB)
mailboxes-col-in-crm = In CRM
mailboxes-col-crm-queue = CRM queue
mailboxes-col-access-by = Access by
mailboxes-actions = Actions
mailboxes-total = { $count ->
    [one] { $count } mailbox
   *[other] { $count } mailboxes
}
mailboxes-total-about = { $count ->
    [one] About { $count } mailbox
   *[other] About { $count } mailboxes
}
mailboxes-unread = { $count ->
    [one] { $count } unread
   *[other] { $count } unread
}
mailboxes-dismissed = dismissed
mailboxes-never = never
mailboxes-sync-now = Sync now
mailboxes-sync-now-of = Sync { $address } now
mailboxes-menu-of = Actions for { $address }
mailboxes-mail = Mail
mailboxes-edit = Edit
mailboxes-transfer = Transfer
mailboxes-disconnect = Disconnect
mailboxes-none = No mailboxes match.
mailboxes-pages = Pages
mailboxes-first = First page
mailboxes-prev = Previous
mailboxes-next = Next
mailboxes-state-pending = waiting for the first sync
mailboxes-state-ok = OK
mailboxes-state-syncing = syncing
mailboxes-state-auth-failed = password refused
mailboxes-state-error = error
mailboxes-edit-title = Edit mailbox
mailboxes-name = Mailbox name
mailboxes-sender-name = Sender name
mailboxes-host = { $server } server
mailboxes-port = { $server } port
mailboxes-security = { $server } security
mailboxes-security-tls = TLS
mailboxes-security-starttls = STARTTLS
mailboxes-security-none = None (plain text)
mailboxes-username = { $server } user name
mailboxes-username-hint = Leave empty to log in with the mailbox address.
mailboxes-password = Password
mailboxes-password-hint = Leave empty to keep the saved one. A changed server needs the password again.
mailboxes-crm = CRM
mailboxes-in-crm = Link this mailbox to CRM
mailboxes-queue = Queue (one email address a line)
mailboxes-queue-hint = The people who get leads and contacts from this mailbox, in turn.
mailboxes-save = Save
mailboxes-cancel = Cancel
mailboxes-nobody-with = No one in your organisation has the address { $address }.
mailboxes-transfer-title = Transfer a mailbox
mailboxes-transfer-lead = Give { $address } to another employee.
mailboxes-owner-now = Now it belongs to { $name }.
mailboxes-new-owner = New owner's email address
mailboxes-disconnect-title = Disconnect a mailbox
mailboxes-disconnect-lead = Disconnect { $address }? Its mail stays on the mail server; Mailroom stops syncing it.
mailboxes-connect-title = Connect a mailbox
mailboxes-connect = Connect
mailboxes-check-only = Check only
mailboxes-check-ok = Both logins work: the mailbox can be connected.
mailboxes-address = Email address
mailboxes-owner = Owner's email address
mailboxes-owner-hint = Leave empty to connect it as your own.
mailboxes-many-title = Connect several mailboxes
mailboxes-many-lead = Mailboxes of one domain that share the same IMAP and SMTP settings.
mailboxes-many-lines = Mailboxes
mailboxes-many-lines-hint = One a line: address, password and optionally the owner's email address, separated by spaces. At most 100.
mailboxes-many-passwords-again = For your safety the passwords were removed from the lines: type each password again after its address.
mailboxes-many-bad-line = Line { $line } needs an address, a password and optionally the owner's email address.
mailboxes-many-count = Enter between 1 and { $max } mailboxes.
mailboxes-many-done = { $count ->
    [one] { $count } mailbox connected
   *[other] { $count } mailboxes connected
}
mailboxes-many-would = { $count ->
    [one] { $count } mailbox can be connected
   *[other] { $count } mailboxes can be connected
}
mailboxes-result = Result
mailboxes-step = Step
mailboxes-reason = Reason
mailboxes-connected = connected
mailboxes-would-connect = can be connected
mailboxes-failed = not connected
mailboxes-step-request = request
mailboxes-back = Back to the mailboxes
notice-sync-queued = Sync requested: new mail arrives in a moment.
notice-columns-saved = Your columns are saved.
notice-mailbox-saved = The mailbox is saved.
notice-nothing-changed = Nothing was changed.
notice-transferred = The mailbox now belongs to its new owner.
notice-disconnected = The mailbox is disconnected.
notice-connected = The mailbox is connected.
