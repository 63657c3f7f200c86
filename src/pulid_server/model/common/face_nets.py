"""facexlib's two torch face networks, re-written so their released weights load unchanged.

* `RetinaFace` (facexlib `detection/retinaface.py`, ResNet-50 backbone): `detection_Resnet50_Final.pth`.
  The backbone is torchvision's resnet50 up to layer4, re-declared here so torchvision is not needed.
* `BiSeNet` (facexlib `parsing/bisenet.py`, ResNet-18 context path, 19 classes): `parsing_bisenet.pth`.

`width` scales the channel counts (official: 64) so the tiny preset runs the same classes.
"""

from __future__ import annotations

from itertools import product
from math import ceil

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- RetinaFace (ResNet-50)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet50Body(nn.Module):
    """torchvision resnet50 minus avgpool/fc; returns layer2..4 (strides 8, 16, 32)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = width
        self.layer1 = self._layer(width, 3, 1)
        self.layer2 = self._layer(width * 2, 4, 2)
        self.layer3 = self._layer(width * 4, 6, 2)
        self.layer4 = self._layer(width * 8, 3, 2)

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c2 = self.layer2(x)
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


def _conv_bn(inp: int, oup: int, k: int, leaky: float | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(inp, oup, k, 1, k // 2, bias=False), nn.BatchNorm2d(oup)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


class SSH(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.conv3X3 = _conv_bn(cin, cout // 2, 3, None)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, 3, leaky)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, 3, None)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, 3, leaky)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, 3, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], dim=1)
        return F.relu(out)


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], cout: int) -> None:
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.output1 = _conv_bn(in_channels[0], cout, 1, leaky)
        self.output2 = _conv_bn(in_channels[1], cout, 1, leaky)
        self.output3 = _conv_bn(in_channels[2], cout, 1, leaky)
        self.merge1 = _conv_bn(cout, cout, 3, leaky)
        self.merge2 = _conv_bn(cout, cout, 3, leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class _Head(nn.Module):
    def __init__(self, cin: int, num_anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(cin, num_anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


RETINA_MIN_SIZES = [[16, 32], [64, 128], [256, 512]]
RETINA_STEPS = [8, 16, 32]
RETINA_VARIANCE = (0.1, 0.2)
RETINA_MEAN_BGR = (104.0, 117.0, 123.0)


class RetinaFace(nn.Module):
    """Input: BGR float image minus (104,117,123), [1,3,H,W]. Output: loc, softmax conf, landmarks."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.body = ResNet50Body(width)
        out = width * 4  # 256 for the official model
        self.fpn = FPN([width * 8, width * 16, width * 32], out)
        self.ssh1, self.ssh2, self.ssh3 = SSH(out, out), SSH(out, out), SSH(out, out)
        self.ClassHead = nn.ModuleList([_Head(out, 2, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(out, 2, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(out, 2, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(x))
        feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landm


def retina_priors(height: int, width: int) -> torch.Tensor:
    """facexlib PriorBox: (cx, cy, w, h) normalised, anchor order = level, row, column, size."""
    anchors: list[float] = []
    for step, sizes in zip(RETINA_STEPS, RETINA_MIN_SIZES):
        for i, j in product(range(ceil(height / step)), range(ceil(width / step))):
            for s in sizes:
                anchors += [(j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height]
    return torch.tensor(anchors).view(-1, 4)


def retina_decode(
    loc: torch.Tensor, conf: torch.Tensor, landm: torch.Tensor, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> boxes [N,4] (pixels), scores [N], landmarks [N,5,2] (pixels) for one image.

    The float operations are facexlib's `decode`/`decode_landm`, in its order (x2 = w + x1, not cx + w/2).
    """
    priors = retina_priors(height, width).to(loc.device)
    v0, v1 = RETINA_VARIANCE
    centers = priors[:, :2] + loc[0, :, :2] * v0 * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[0, :, 2:] * v1)
    top_left = centers - sizes / 2
    boxes = torch.cat([top_left, sizes + top_left], dim=1)
    pts = priors[:, None, :2] + landm[0].view(-1, 5, 2) * v0 * priors[:, None, 2:]
    scale = torch.tensor([width, height], dtype=torch.float32, device=loc.device)
    boxes = boxes * scale.repeat(2)
    pts = pts * scale
    return boxes.cpu().numpy(), conf[0, :, 1].cpu().numpy(), pts.cpu().numpy()


# ---------------------------------------------------------------- BiSeNet (ResNet-18)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + residual)


class ResNet18(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        f8 = self.layer2(x)
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class AttentionRefinementModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(F.avg_pool2d(feat, feat.shape[2:]))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.resnet = ResNet18(w)
        self.arm16 = AttentionRefinementModule(4 * w, 2 * w)
        self.arm32 = AttentionRefinementModule(8 * w, 2 * w)
        self.conv_head32 = ConvBNReLU(2 * w, 2 * w)
        self.conv_head16 = ConvBNReLU(2 * w, 2 * w)
        self.conv_avg = ConvBNReLU(8 * w, 2 * w, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        avg = self.conv_avg(F.avg_pool2d(f32, f32.shape[2:]))
        f32_sum = self.arm32(f32) + F.interpolate(avg, f32.shape[2:], mode="nearest")
        f32_up = self.conv_head32(F.interpolate(f32_sum, f16.shape[2:], mode="nearest"))
        f16_sum = self.arm16(f16) + f32_up
        f16_up = self.conv_head16(F.interpolate(f16_sum, f8.shape[2:], mode="nearest"))
        return f8, f16_up, f32_up


class FeatureFusionModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.avg_pool2d(feat, feat.shape[2:])))))
        return feat * atten + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, cin: int, mid: int, num_class: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, num_class, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Returns only the main head (facexlib's output [0]), upsampled to the input size."""

    def __init__(self, num_class: int = 19, width: int = 64) -> None:
        super().__init__()
        w = width
        self.cp = ContextPath(w)
        self.ffm = FeatureFusionModule(4 * w, 4 * w)
        self.conv_out = BiSeNetOutput(4 * w, 4 * w, num_class)
        # Auxiliary heads: unused at inference but part of the checkpoint.
        self.conv_out16 = BiSeNetOutput(2 * w, w, num_class)
        self.conv_out32 = BiSeNetOutput(2 * w, w, num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8, cp8, _ = self.cp(x)
        out = self.conv_out(self.ffm(f8, cp8))
        return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)
