# Sentences of the invitations pages.
