# Sentences of the people pages.
