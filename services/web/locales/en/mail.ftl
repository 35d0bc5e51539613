# Sentences of the mail pages.
mail-title = Mail of { $address }
mail-back-to-mailboxes = Back to mailboxes
mail-back-to-folder = Back to { $folder }
mail-last-sync = Last synced:
mail-folders = Folders
mail-unread-count = { $count ->
    [one] { $count } unread message
   *[other] { $count } unread messages
}
mail-unread-only = Unread only
mail-filter-apply = Show
mail-section-unread = Unread
mail-section-read = Read
mail-col-from = From
mail-col-subject = Subject
mail-col-date = Received
mail-no-subject = (no subject)
mail-unread-mark = (unread)
mail-first-page = First page
mail-empty = There are no messages in this folder yet.
mail-empty-unread = There are no unread messages in this folder.
mail-needs-grant = Reading this mailbox needs a grant from its owner. Ask the owner, or an administrator, to add you as a reader.
mail-from = From
mail-to = To
mail-cc = Cc
mail-date = Date
mail-images-blocked = { $count ->
    [one] { $count } remote image blocked
   *[other] { $count } remote images blocked
}
mail-images-show = Show
mail-images-shown = Remote images are shown for this view. Reload the page to block them again.
mail-frame-title = Message: { $subject }
mail-frame-busy = Too many messages opened at once. Wait a moment and reload the page.
mail-links-hint = Links in a message do not open from here, for your safety; copy a link you trust and open it yourself.
