# Sentences of the access pages.
