# Sentences of the mailboxes pages.
