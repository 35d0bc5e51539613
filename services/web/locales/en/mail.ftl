# Sentences of the mail pages.
