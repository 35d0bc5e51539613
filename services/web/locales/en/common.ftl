# The layout, navigation, errors and the home page.
app-name = Mailroom
skip-to-content = Skip to content
nav-home = Home
nav-mailboxes = Mailboxes
nav-invite = Invite people
nav-invitations = Invitations
nav-people = Employees
nav-departments = Departments
nav-access = Access permissions
nav-account = My account
nav-main = Main
sign-out = Sign out
language = Language
language-switch = Switch
lang-en = English
lang-ru = Русский
times-in-zone = Times in { $zone }
count-mailboxes = { $count ->
    [one] { $count } mailbox
   *[other] { $count } mailboxes
}
home-title = Welcome, { $name }
home-lead = What would you like to do?
home-mailboxes = Manage user mailboxes
home-invite = Invite people
home-people = Employees and departments
home-access = Access permissions
error-title = Something went wrong
error-back = Back to the start page
error-not-found = This page does not exist, or you may not see it.
error-forbidden = You may not do this. Ask an administrator of your organisation for the permission.
error-csrf = This form expired. Reload the page and try again.
error-unavailable = Mailroom cannot answer right now. Try again in a moment.
error-internal = Something broke on our side. Try again; if it keeps happening, tell your administrator.
error-too-many = Too many attempts. Try again in { $seconds } seconds.
error-conflict = Someone changed this at the same time. Reload to see the current version.
error-request-id = Reference for your administrator: { $id }
session-ended = Your session ended. Sign in again.
signed-in-as = Signed in as { $name }
field-required = Fill in this field.
save = Save
cancel = Cancel
next-page = Next
previous-page = Previous
actions = Actions
yes = Yes
no = No
