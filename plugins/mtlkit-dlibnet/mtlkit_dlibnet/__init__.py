"""mtlkit-dlibnet: dlib's pretrained face-recognition ResNet as an mtlkit backbone."""
