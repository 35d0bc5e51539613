# Sentences of the invitations pages (part D: the inviter's side).
inv-tabs = Inviting people
inv-tab-invite = Invite people
inv-tab-list = Invitations
inv-tab-links = Quick-registration links
inv-tab-register = Register a person
inv-tab-settings = Organisation settings
inv-seats-line = { $used } of { $limit } seats used, { $left } left
inv-seats-unlimited = { $used } { $used ->
    [one] seat
   *[other] seats
} used; no limit
inv-no-seats-left = Every seat is taken. Free one (revoke a pending invitation or dismiss someone) or ask for a bigger plan.
inv-not-enough-seats = Not enough free seats for these addresses: { $left ->
    [0] none is left.
    [one] only one is left.
   *[other] only { $left } are left.
}
inv-could-not = This could not be done:
inv-invite-title = Invite people
inv-emails = Email addresses
inv-emails-hint = One or many, separated by spaces, commas, semicolons or new lines. "Name <address>" works too.
inv-department = Department
inv-department-hint = When they accept, they join this department.
inv-no-department = No department
inv-message = Your message (optional)
inv-message-hint = Your words are added to the invitation mail, where { "{" }message{ "}" } stands in the text below.
inv-language = Language of the mail
inv-delivery = How to send the invitations
inv-delivery-system = Mailroom sends them
inv-delivery-own = I send them from my own mail client
inv-delivery-own-hint = From your own mail client the mail comes from your address, which people trust more. You get each person's link, so keep them to yourself.
inv-delivery-system-hint = Mailroom mails each person their own link.
inv-preview = The invitation mail
inv-preview-hint = Your organisation's text; Mailroom fills in the names, the link and the date.
inv-subject = Subject:
inv-invite-submit = Invite
inv-see-list = See the invitations
inv-invite-more = Invite more people
inv-result-title = Invitations
inv-result-none = Nobody was invited. The table below says why for each address.
inv-result-sent = { $count ->
    [one] The invitation is on its way.
   *[other] { $count } invitations are on their way.
}
inv-result-own = { $count ->
    [one] The invitation is ready. Send it from your mail client:
   *[other] { $count } invitations are ready. Send each one from your mail client:
}
inv-composed-title = What to send
inv-composed-body = The text of the mail
inv-composed-caption = One mail per person, each with their own link
inv-composed-hint = A link opens your mail client with the mail written. If nothing opens, copy the person's link into a mail of your own.
inv-open-mail = Write to { $email }
inv-rejected-caption = Not invited
inv-rejected-malformed = Not an address Mailroom can invite
inv-rejected-user = Already in the organisation
inv-rejected-invited = Already invited
inv-rejected-duplicate = Twice in the list
inv-rejected-other = Not invited
inv-col-address = Address
inv-col-why = Why
inv-col-detail = Details
inv-col-mail = Mail
inv-col-link = Personal link
inv-col-state = Status
inv-col-kind = How
inv-col-inviter = Invited by
inv-col-created = Created
inv-col-expires = Expires
inv-list-title = Invitations
inv-list-empty = No invitations match.
inv-pages = Pages
inv-total = { $count ->
    [one] { $count } invitation
   *[other] { $count } invitations
}
inv-filter-state = Status
inv-filter-all = Any status
inv-filter-email = Address contains
inv-filter-apply = Show
inv-state-pending = Pending
inv-state-awaiting = Awaiting approval
inv-state-accepted = Accepted
inv-state-expired = Expired
inv-state-revoked = Revoked
inv-state-failed = Not delivered
inv-state-rejected = Rejected
inv-state-unknown = Unknown
inv-kind-email = By email
inv-kind-direct = Registered
inv-kind-link = Quick-registration link
inv-sent-times = { $count ->
    [one] sent once
   *[other] sent { $count } times
}
inv-resend = Resend
inv-revoke = Revoke
inv-delete = Remove
inv-approve = Approve
inv-reject = Reject
notice-inv-resend = The invitation was sent again with a new link; the old link no longer works.
notice-inv-revoke = The invitation was revoked; its seat is free again.
notice-inv-delete = The invitation was removed from the list.
notice-inv-approve = Approved: the person has been mailed their link.
notice-inv-too-soon = This invitation was mailed only a moment ago. Resend it a little later, so the person is not flooded with mail.
notice-inv-changed = This invitation changed meanwhile (accepted, expired or ended by someone else); the list shows it as it is now.
notice-inv-reject = The registration was rejected.
inv-links-title = Quick-registration links
inv-links-lead = Share a link with the people who should join: they give their address and name, confirm the address from a mail, and are in. Limit it to your domains or ask to approve each person.
inv-links-new = Create a link
inv-links-domains = Allowed email domains
inv-links-domains-hint = For example: example.com, example.org. Leave empty to allow any address.
inv-links-approval = An administrator approves each person
inv-links-max-uses = How many people may join
inv-links-max-uses-hint = Leave empty for no limit.
inv-links-valid-days = Valid for (days)
inv-links-valid-days-hint = 0: until you disable it.
inv-links-create = Create the link
inv-links-bad-number = Enter whole numbers of people and days.
inv-links-created = The link is ready. Copy it now and share it:
inv-links-created-hint = Mailroom keeps only a fingerprint of the link, so it is shown this one time. If you lose it, disable it and create another.
inv-links-caption = Your organisation's links
inv-links-col-domains = Domains
inv-links-col-approval = Approval
inv-links-col-uses = Joined
inv-links-any-domain = Any domain
inv-links-no-expiry = Until disabled
inv-links-uses-of = { $uses } of { $max }
inv-links-registrations = { $count ->
    [one] { $count } registration
   *[other] { $count } registrations
}
inv-links-active = Active
inv-links-disabled = Disabled
inv-links-disable = Disable
inv-links-empty = No links yet.
notice-inv-link-disabled = The link was disabled; nobody can join through it any more.
inv-awaiting-title = Awaiting approval
inv-awaiting-empty = Nobody is waiting for approval.
inv-register-title = Register a person
inv-register-lead = Add a person to the organisation yourself: they are mailed a link to choose their password.
inv-first-name = First name
inv-last-name = Last name
inv-email = Email address
inv-position = Position
inv-register-submit = Register
notice-inv-registered = Registered: the person has been mailed a link to choose their password.
inv-settings-title = Organisation settings
inv-settings-who = Who may invite people
inv-settings-allow = Allow everyone to invite people
inv-settings-allow-hint = When off, only administrators (and roles that may invite) can invite.
notice-inv-settings-saved = The settings were saved.
