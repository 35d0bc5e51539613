# Sentences of the access pages.
# Предложения страниц части access.

## The roles page
access-roles-title = Access permissions
access-roles-lead = Roles say who may see and change the company's mailboxes, invite people and configure these permissions. Each mailbox permission reaches as far as its scope: none, one's own mailboxes, those of one's subordinates, one's own department and below, or all.
access-read-mail-note = No role lets anyone read mail: only the mailbox's owner and the people it was shared with read it, not even administrators or supervisors.
access-mine-title = Your roles
access-read-only = Only administrators and people whose role may configure access permissions change roles. You see them as they are.
access-matrix-caption = Roles and what they allow: how far each mailbox permission reaches, and whether the role may invite people and configure access permissions
access-col-role = Role
access-col-view = See in list
access-col-connect = Connect
access-col-modify = Change
access-col-read = Give reading
access-col-invite = Invite
access-col-manage = Configure
access-rel-assignee = given to: { $name }
access-grant-view = See mailboxes in the list
access-grant-connect = Connect mailboxes
access-grant-modify = Change mailbox settings
access-grant-read = Give read access
access-grant-invite = Invite people
access-grant-manage = Configure access permissions
access-scope-none = None
access-scope-own = Own
access-scope-subordinates = Subordinates
access-scope-department = Department
access-scope-all = All
access-kind-administrator = Built in
access-kind-default = Default
access-kind-custom = Custom
access-holders-administrator = Every administrator of the organisation
access-holders-supervisor = By default: people heading a department
access-holders-manager = By default: everyone else
access-hidden = Hidden
access-hidden-note = A hidden role still works; it is only left out of the usual lists.
access-assignment-count = { $count ->
    [one] { $count } assignment
   *[other] { $count } assignments
}
access-save-role = Save { $name }
access-fixed = Fixed
access-conflict = Someone changed this role in the meantime; here is the current one. Make your change again and save.
access-conflict-delete = Someone changed this role in the meantime. Look at it again before you delete it.
access-create-title = Create a role
access-role-name = Role name
access-create-hint = A new role allows nothing until you choose its permissions.
access-create = Create role
access-explain-link = Why can someone see a mailbox? Ask.
access-bad-form = This form was not filled in by this page. Reload it and try again.

## One role
access-back-to-roles = All roles
access-administrator-fixed = Administrator always allows everything and is held by exactly the organisation's administrators; make someone an administrator on their employee page.
access-grants-title = What this role allows
access-org-grants = In the organisation
access-scope-hint = Own: one's own mailboxes. Subordinates: also those of everyone one supervises. Department: also those of everyone in one's departments and below. All: every mailbox.
access-assignments-title = Who has this role
access-assignments-hint = A person with a role of their own, from their department or as a department head no longer gets the roles of "everyone else".
access-no-assignments = Nobody has this role yet.
access-col-assigned-to = Assigned to
access-assignments-pages = Pages of assignments
access-unassign = Take away from { $name }
access-assign-title = Give this role
access-assign-person = Give to a person
access-person-email = Person's email address
access-assign-department = Give to a department
access-department = Department
access-with-sub = With its sub-departments
access-assign-heads = Give to everyone heading a department
access-assign-everyone-else = Give to everyone else
access-to-person = { $name }
access-to-members = Members of { $name }
access-to-tree = { $name } and its sub-departments
access-to-heads = Everyone heading a department
access-to-everyone-else = Everyone else (people with no other role)
access-person-unknown = Nobody in your organisation has the address "{ $name }".
access-department-needed = Choose a department.
access-more-title = More
access-clone = Copy this role
access-clone-name = Name of the copy
access-clone-placeholder = { $name } (copy)
access-hide = Hide this role
access-show = Show this role
access-delete = Delete this role

## Deleting a role
access-delete-title = Delete the role { $name }?
access-delete-lead = { $count ->
    [one] It is given to { $count } person, department or group; they lose it.
   *[other] It is given to { $count } people, departments or groups; they all lose it.
}
access-delete-confirm = Delete the role

## A mailbox's readers
access-readers-title = Who reads { $email }
access-back-to-mailboxes = Mailboxes
access-readers-owner = Owner: { $name }
access-readers-caption = People who may read this mailbox's mail
access-readers-unnamed = { $count ->
    [one] Names are shown for the first 200 people; { $count } more appears by their id.
   *[other] Names are shown for the first 200 people; { $count } more appear by their ids.
}
access-col-person = Person
access-col-why = Why
access-reader-owner = Owner
access-reader-granted = Given read access
access-reader-remove = Take read access away from { $name }
access-why-link = Why can { $name } read it?
access-reader-add-title = Give read access
access-reader-add = Give read access
access-reader-no-grant = You cannot give read access to this mailbox: your roles do not allow it.

## Why can someone see this?
access-explain-title = Why can someone see this?
access-explain-lead = Choose a person and what they would do; Mailroom answers whether they may, and why.
access-permission = What they would do
access-explain-mailbox = Mailbox (address or id)
access-explain-mailbox-hint = Leave it empty for the organisation's permissions (invite, configure access, register users).
access-explain-submit = Explain
access-explain-mailbox-needed = This permission is about a mailbox: give its address or id.
access-mailbox-unknown = No mailbox you can see has the address "{ $name }".
access-explain-yes = Yes: { $name } may { $what } ({ $target }).
access-explain-no = No: { $name } may not { $what } ({ $target }).
access-explain-reason = Reason:
access-explain-path = How:
access-explain-role = Role
access-explain-scope = Its reach
access-explain-assignment = Given to
access-explain-denied-hint = To change this, give the person a role that allows it, or (to read mail) give them read access to the mailbox.
access-perm-view = see the mailbox in the list
access-perm-read-mail = read its mail
access-perm-modify = change its settings
access-perm-sync = sync it now
access-perm-connect = connect mailboxes for its owner
access-perm-grant-read = give or take away read access to it
access-perm-invite = invite people
access-perm-manage = configure access permissions
access-perm-register = register users
access-node-department = department { $name }
access-node-mailbox = mailbox { $name }
access-node-role = role { $name }
access-node-org = the organisation
access-rel-owner = owner { $name }
access-rel-reader = read access given to { $name }
access-rel-member = member of { $name }
access-rel-head = headed by { $name }
access-rel-parent = inside { $name }
access-rel-admin = administrator { $name }
access-rel-everyone-invites = everyone may invite

## Notices
notice-access-created = The role was created. Choose what it allows and whom to give it to.
notice-access-saved = The role was saved.
notice-access-unchanged = Nothing was changed.
notice-access-cloned = The copy was created; nobody has it yet.
notice-access-deleted = The role was deleted.
notice-access-assigned = The role was given.
notice-access-unassigned = The role was taken away.
notice-access-reader-added = Read access was given.
notice-access-reader-removed = Read access was taken away.
