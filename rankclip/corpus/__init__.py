"""Training-corpus stage: the image-text pairs training reads.

``web`` downloads a URL + caption list (CC3M) into verified webdataset shards, ``captions`` adds ALIP's
synthetic caption to copies of them, ``subsets`` cuts the nested data-size subsets (manifests of keys),
``loader`` streams shards into training batches.
"""
