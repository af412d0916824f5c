"""cxr-adapt: an exported model fitted to one site's labelled films, at the edge."""
