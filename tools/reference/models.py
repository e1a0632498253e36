"""Reference PyTorch modules of the CNN+LSTM models attrib loads, with exactly the
state-dict names attrib reads.

- EncoderCNN / DecoderRNN: Show and Tell as the PyTorch tutorial writes it
  (yunjey/pytorch-tutorial, image_captioning/model.py), with the trunk either a
  torchvision ResNet (`resnet.N`, the tutorial's own) or a stack of convolutions
  (`cnn.N`: conv, ReLU[, 2x2 max pool], ..., then global average pooling).
- VqaNet: the "deeper LSTM Q + norm I" baseline of Antol, Agrawal et al.: the image's
  pooled features L2-normalised, linear + tanh; the question's embeddings + tanh, a
  2-layer LSTM, the concatenated final hidden and cell states, linear + tanh; their
  point-wise product; linear + tanh + linear to the answer scores.

The tutorial's encoder runs its ResNet under torch.no_grad() (it trains only the
projection); here gradients flow, since attribution needs them.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.nn.utils.rnn import pack_padded_sequence


def conv_stack(channels, pools):
    """conv3x3(pad 1) + ReLU (+ MaxPool2d(2)) per entry: the layout attrib reads from
    the indices of `cnn.N.weight`."""
    layers, c_in = [], 3
    for c, pool in zip(channels, pools):
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        c_in = c
    return nn.Sequential(*layers)


class EncoderCNN(nn.Module):
    def __init__(self, embed_size, trunk="resnet18", channels=(16, 32, 64), pools=(True, True, False)):
        super().__init__()
        if trunk.startswith("resnet"):
            resnet = getattr(torchvision.models, trunk)(weights=None)
            for m in resnet.modules():
                if isinstance(m, nn.ReLU):
                    m.inplace = False
            self.resnet = nn.Sequential(*list(resnet.children())[:-1])
            features = resnet.fc.in_features
        else:
            self.cnn = conv_stack(channels, pools)
            features = channels[-1]
        self.linear = nn.Linear(features, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def trunk(self):
        return self.resnet if hasattr(self, "resnet") else self.cnn

    def forward(self, images):
        f = self.trunk()(images)
        if not hasattr(self, "resnet"):
            f = F.adaptive_avg_pool2d(f, 1)
        f = f.reshape(f.size(0), -1)
        return self.bn(self.linear(f))


class DecoderRNN(nn.Module):
    def __init__(self, embed_size, hidden_size, vocab_size, num_layers, max_seq_length=20):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)
        self.max_seg_length = max_seq_length

    def forward(self, features, captions, lengths):
        """The tutorial's training forward: logits of the packed steps."""
        embeddings = self.embed(captions)
        embeddings = torch.cat((features.unsqueeze(1), embeddings), 1)
        packed = pack_padded_sequence(embeddings, lengths, batch_first=True)
        hiddens, _ = self.lstm(packed)
        return self.linear(hiddens[0])

    def token_log_probs(self, features, captions, lengths):
        """(N, L_max - 1): log p(token t | ...) for t = 1 .. L-1 of each caption
        (`<start> w_1 .. w_n <end>`, padded), NaN past an item's end: attrib's
        scores for a captioner conditioned on captions."""
        emb = self.embed(captions[:, :-1])
        x = torch.cat((features.unsqueeze(1), emb), 1)
        h, _ = self.lstm(x)
        lp = F.log_softmax(self.linear(h[:, 1:]), dim=-1)
        picked = lp.gather(2, captions[:, 1:].unsqueeze(2)).squeeze(2)
        steps = torch.arange(1, captions.size(1)).unsqueeze(0)
        valid = steps < torch.tensor(lengths).unsqueeze(1)
        return torch.where(valid, picked, torch.full_like(picked, float("nan"))), valid

    def sample(self, features, states=None):
        """The tutorial's greedy decoding."""
        sampled_ids = []
        inputs = features.unsqueeze(1)
        for _ in range(self.max_seg_length):
            hiddens, states = self.lstm(inputs, states)
            outputs = self.linear(hiddens.squeeze(1))
            _, predicted = outputs.max(1)
            sampled_ids.append(predicted)
            inputs = self.embed(predicted).unsqueeze(1)
        return torch.stack(sampled_ids, 1)


class VqaNet(nn.Module):
    def __init__(self, vocab, answers, channels=(16, 32, 64), pools=(True, True, False),
                 embed=32, hidden=64, layers=2, common=128, mlp=128):
        super().__init__()
        self.cnn = conv_stack(channels, pools)
        self.img_fc = nn.Linear(channels[-1], common)
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.q_fc = nn.Linear(2 * layers * hidden, common)
        self.fc1 = nn.Linear(common, mlp)
        self.fc2 = nn.Linear(mlp, answers)
        self.drop = nn.Dropout(0.1)

    def question(self, q, lengths):
        e = torch.tanh(self.embed(q))
        packed = pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
        _, (h, c) = self.lstm(packed)
        state = torch.cat(list(h) + list(c), dim=1)
        return torch.tanh(self.q_fc(state))

    def forward(self, img, q, lengths):
        f = F.adaptive_avg_pool2d(self.cnn(img), 1).flatten(1)
        v = torch.tanh(self.img_fc(F.normalize(f, dim=1)))
        x = self.drop(v * self.question(q, lengths))
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))
